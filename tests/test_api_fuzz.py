"""Schemathesis against the upload service's own OpenAPI description: generated
requests (valid and invalid) never get a 5xx, every refusal is a JSON error with a
documented reason, and the service stays up."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgpipe.testing.processes import ServiceProcesses
from imgpipe.upload.reasons import ERROR_REASONS

schemathesis = pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 25


def _problems(response: requests.Response) -> list[str]:
    problems = []
    if response.status_code >= 500:
        problems.append(f"{response.status_code}: {response.text[:300]}")
    elif response.status_code >= 400:
        try:
            error = response.json()["error"]
            reason, message = error["reason"], error["message"]
        except (ValueError, KeyError, TypeError):
            return [f"{response.status_code} without a JSON error: {response.text[:200]}"]
        if reason not in ERROR_REASONS:
            problems.append(f"undocumented reason {reason!r}")
        if not message:
            problems.append(f"reason {reason!r} without a message")
    return problems


def _fuzz(operation: Any, doc: dict[str, Any], url: str, session: requests.Session,
          found: dict[str, list[str]]) -> None:
    """Send ``EXAMPLES`` generated requests (valid and invalid) to one operation."""
    documented = doc["paths"][operation.path][operation.method.lower()]["responses"]
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]

    @given(case=st.one_of(*(operation.as_strategy(generation_mode=m) for m in modes)))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=30)
        problems = _problems(response)
        if str(response.status_code) not in documented and "default" not in documented:
            problems.append(f"status {response.status_code} not documented")
        for problem in problems:
            found.setdefault(operation.label, []).append(
                f"{problem} <- {case.as_curl_command()[:300]}")

    run()


def _streams(doc: dict[str, Any], operation: Any) -> bool:
    ok = doc["paths"][operation.path][operation.method.lower()]["responses"].get("200", {})
    return "text/event-stream" in ok.get("content", {})


def test_generated_requests_never_break_the_upload_service(shared_system: ServiceProcesses) -> None:
    url = shared_system.upload_url
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    found: dict[str, list[str]] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if _streams(doc, operation):
                continue  # an open event stream never ends: tests/test_events.py covers it
            _fuzz(operation, doc, url, session, found)
    assert not found, found
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def _refusal(response: requests.Response) -> tuple[int, str]:
    assert not _problems(response), _problems(response)
    return response.status_code, response.json()["error"]["reason"]


def test_the_review_requests_get_documented_refusals(shared_system: ServiceProcesses) -> None:
    """Issue 16's requests, scaled down, against the four services: each a fast 4xx with a
    documented reason, the service up afterwards."""
    url = shared_system.upload_url
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000185d7ba0a0000000049454e44ae426082")
    with requests.Session() as http:
        many = [("pipeline", (None, f"resize:w={i + 1}")) for i in range(200)]
        response = http.post(f"{url}/upload", files=[("file", ("a.png", png)), *many], timeout=30)
        assert _refusal(response) == (413, "too_many_pipelines")
        response = http.post(f"{url}/upload", params=[("pipeline", "thumbnail")] * 17,
                             files=[("file", ("a.png", png))], timeout=30)
        assert _refusal(response) == (413, "too_many_pipelines")
        deep = '{"pipeline":' * 5000 + '"thumbnail"' + "}" * 5000
        response = http.post(f"{url}/pipelines/validate", data=deep, timeout=30,
                             headers={"Content-Type": "application/json"})
        assert _refusal(response) == (400, "json_too_deep")
        job = http.post(f"{url}/upload", files=[("file", ("a.png", png))], timeout=30).json()
        job_id = job["jobs"][0]["job_id"]
        for index in ("-1", "+0", "0_0", "\uff10", "1e3"):
            response = http.get(f"{url}/jobs/{job_id}/outputs/{index}", timeout=30)
            assert _refusal(response) == (404, "output_not_found"), index
        for path in ("/static/index.html", "/api", "/"):
            headers = http.get(f"{url}{path}", timeout=30).headers
            assert "default-src" in headers["Content-Security-Policy"], path
        response = http.get(f"{url}/jobs/{job_id}/input", timeout=30)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert http.get(f"{url}/healthz", timeout=5).status_code == 200
