"""The page's API on a real upload service: presets, validation, job lists, inputs, OpenAPI."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from imgpipe.client.api import Client
from imgpipe.testing.processes import ServiceProcesses
from imgpipe.upload.app import create_app
from imgpipe.upload.context import Backends
from imgpipe.upload.reasons import ERROR_REASONS
from imgpipe.upload.routes.pages import served_routes
from imgpipe.upload.settings import UploadSettings
from tests.images import image_bytes

SRC = Path(__file__).resolve().parent.parent / "src" / "imgpipe"
PRESETS_FILE = """\
[presets.banner]
description = "Wide banner for the project page"
pipeline = "resize:w=1200,h=300,fit=cover/format:webp"
"""


@pytest.fixture(scope="module")
def module_system(module_system: ServiceProcesses) -> ServiceProcesses:
    """This module's upload service reads a presets file."""
    presets = module_system.logs / "presets.toml"
    presets.write_text(PRESETS_FILE)
    module_system.env["IMGPIPE_PRESETS"] = str(presets)
    return module_system


@pytest.fixture(scope="module")
def upload(upload_only: ServiceProcesses) -> str:
    """Only the upload service, shared by this module's tests (no runner: jobs stay queued)."""
    return upload_only.upload_url


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json(), resp.headers
        return resp.status, await resp.read(), resp.headers


async def post_images(url: str, *images: tuple[str, bytes]) -> list[dict[str, Any]]:
    async with Client(url) as client:
        return await client.upload_files(images)


async def test_page_and_its_files_are_served(upload: str) -> None:
    status, page, headers = await call("GET", f"{upload}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = page.decode()
    for needle in ('<label for="pipeline">', '<label for="preset">', 'id="files"',
                   'href="/static/app.css"', 'src="/static/app.js"', 'href="/api"'):
        assert needle in text
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in (("app.js", "javascript"), ("live.js", "javascript"),
                       ("graph.js", "javascript"), ("status.js", "javascript"),
                       ("app.css", "text/css")):
        status, body, headers = await call("GET", f"{upload}/static/{name}")
        assert status == 200 and kind in headers["Content-Type"] and body
        text += body.decode()
    text = text.replace('"http://www.w3.org/2000/svg"', "")  # SVG's namespace: a name, not fetched
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), "no CDN or remote resource"
    status, body, _ = await call("GET", f"{upload}/static/..%2f..%2fweb.py")
    assert status in (403, 404)


async def test_presets_list_names_and_canonical_pipelines(upload: str) -> None:
    status, body, _ = await call("GET", f"{upload}/presets")
    assert status == 200
    presets = {p["name"]: p["pipeline"] for p in body["presets"]}
    assert body["default"] == "thumbnail"
    assert presets["thumbnail"] == "resize:w=256,h=256/format:jpeg"
    entries = {p["name"]: p for p in body["presets"]}
    assert entries["banner"] == {"name": "banner", "description": "Wide banner for the project page",
                                 "pipeline": "resize:w=1200,h=300,fit=cover/format:webp",
                                 "builtin": False}
    assert entries["thumbnail"]["builtin"] and entries["thumbnail"]["description"]


async def test_uploads_and_validation_know_the_presets_file(upload: str) -> None:
    status, body, _ = await call("GET", f"{upload}/pipelines/validate", params={"pipeline": "banner"})
    assert status == 200 and body["canonical"] == "resize:w=1200,h=300,fit=cover/format:webp"
    form = aiohttp.FormData()
    form.add_field("file", image_bytes(64, 48, ".png"), filename="a.png")
    form.add_field("pipeline", "banner")
    status, body, _ = await call("POST", f"{upload}/upload", data=form)
    assert status == 202 and body["jobs"][0]["pipelines"] == [
        "resize:w=1200,h=300,fit=cover/format:webp"]


async def test_favicon(upload: str) -> None:
    status, body, headers = await call("GET", f"{upload}/favicon.ico")
    assert status == 200 and headers["Content-Type"] == "image/x-icon"
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO header
    status, svg, headers = await call("GET", f"{upload}/static/favicon.svg")
    assert status == 200 and headers["Content-Type"].startswith("image/svg")


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("thumbnail", "resize:w=256,h=256/format:jpeg"),
        ("  resize:w=300/format:png ", "resize:w=300/format:png"),
        ('[{"op": "resize", "w": 300}, {"op": "format", "format": "png"}]', "resize:w=300/format:png"),
    ],
)
async def test_validate_gives_the_canonical_form(upload: str, spec: str, canonical: str) -> None:
    status, body, _ = await call("GET", f"{upload}/pipelines/validate", params={"pipeline": spec})
    assert status == 200, body
    assert body["valid"] is True and body["canonical"] == canonical
    assert body["steps"][-1]["op"] == "format"


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ("resize:w=abc", "invalid_pipeline", "resize"),
        ("frobnicate:x=1", "invalid_pipeline", "frobnicate"),
        ("no-such-preset", "unknown_preset", "no-such-preset"),
        ("", "missing_pipeline", "pipeline"),
    ],
)
async def test_validate_refuses_with_a_reason(upload: str, spec: str, reason: str, words: str) -> None:
    status, body, _ = await call("GET", f"{upload}/pipelines/validate", params={"pipeline": spec})
    assert status == 400
    assert body["error"]["reason"] == reason
    assert words in body["error"]["message"]


async def test_validate_by_post(upload: str) -> None:
    status, body, _ = await call("POST", f"{upload}/pipelines/validate",
                                 json={"pipeline": [{"op": "resize", "w": 64}]})
    assert status == 200 and body["canonical"].startswith("resize:w=64")
    status, body, _ = await call("POST", f"{upload}/pipelines/validate", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["reason"] == "invalid_json"


async def test_job_list_and_input(upload: str) -> None:
    first, second = image_bytes(120, 80, ".png"), image_bytes(90, 60, ".jpg")
    jobs = await post_images(upload, ("a.png", first), ("b.jpg", second))
    ids = [j["job_id"] for j in jobs]
    unknown = "0" * 32
    status, body, _ = await call("GET", f"{upload}/jobs", params={"ids": f"{ids[1]},{unknown},{ids[0]}"})
    assert status == 200
    assert [v["job_id"] for v in body["jobs"]] == [ids[1], ids[0]]
    assert all(v["status"] == "queued" for v in body["jobs"])
    assert body["missing"] == [unknown]

    status, data, headers = await call("GET", f"{upload}/jobs/{ids[0]}/input")
    assert status == 200 and data == first and headers["Content-Type"] == "image/png"
    status, body, _ = await call("GET", f"{upload}/jobs/{unknown}/input")
    assert status == 404 and body["error"]["reason"] == "input_not_found"


@pytest.mark.parametrize(
    ("ids", "reason"),
    [("", "missing_ids"), ("xyz", "invalid_job_id"),
     (",".join(f"{i:032x}" for i in range(101)), "too_many_ids")],
)
async def test_job_list_refusals(upload: str, ids: str, reason: str) -> None:
    status, body, _ = await call("GET", f"{upload}/jobs", params={"ids": ids})
    assert status == 400 and body["error"]["reason"] == reason


def _app_routes() -> set[tuple[str, str]]:
    backend = SimpleNamespace(check=None)
    app = create_app(UploadSettings(), Backends(broker=backend, store=backend,  # type: ignore[arg-type]
                                                provenance=backend))
    return served_routes(app)


def _raised_reasons() -> set[str]:
    """Every reason the upload service and the core pieces it uses can refuse with."""
    files = [*SRC.joinpath("upload").rglob("*.py"), *SRC.joinpath("domain", "pipeline").glob("*.py")]
    files += [SRC / name for name in ("broker/protocol.py", "storage/s3.py", "provstore/couch.py",
                                      "runtime/http.py", "domain/lineage.py", "domain/verify.py",
                                      "client/imageproc.py")]
    pattern = re.compile(r'reason\s*=\s*"([a-z_]+)"|error_response\(\s*\d+,\s*"([a-z_]+)"')
    found: set[str] = set()
    for path in files:
        if path.name in ("openapi.py", "apidoc.py", "reasons.py"):
            continue
        for match in pattern.finditer(path.read_text()):
            found.add(match.group(1) or match.group(2))
    # reasons of the scanned modules that never reach an HTTP answer of the upload service:
    # a preset file imageproc loads at start; imageproc's deadline, which verify reports per step;
    # a dead letter's reason when RabbitMQ itself dead-lettered it
    not_http = {"invalid_presets", "imageproc_deadline", "rejected"}
    return (found - not_http) | {"backend_unavailable", "not_found", "method_not_allowed",
                                 "missing_token"}


async def test_openapi_describes_every_route_and_reason(upload: str) -> None:
    status, doc, _ = await call("GET", f"{upload}/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    missing = _app_routes() - documented
    assert not missing, f"routes not described in src/imgpipe/upload/openapi.py: {missing}"
    undocumented = _raised_reasons() - set(ERROR_REASONS)
    assert not undocumented, f"error reasons missing from openapi.ERROR_REASONS: {undocumented}"
    assert set(doc["x-error-reasons"]) == set(ERROR_REASONS)
    job = doc["components"]["schemas"]["Job"]["properties"]
    assert {"job_id", "status", "outputs", "provenance_url", "error", "input"} <= set(job)


async def test_api_page_lists_endpoints_fields_and_reasons(upload: str) -> None:
    status, page, headers = await call("GET", f"{upload}/api")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = page.decode()
    _, doc, _ = await call("GET", f"{upload}/openapi.json")
    for path in doc["paths"]:
        assert f"<code>{path}</code>" in text
    for reason in ERROR_REASONS:
        assert f'id="reason-{reason}"' in text
    for field in ("job_id", "completed_at", "media_type", "provenance_url", "missing"):
        assert f"<code>{field}</code>" in text
