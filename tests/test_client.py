"""`imgpipe submit` and `imgpipe jobs`, run as commands against the four real services."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

from imgpipe.client.submit import UsageError, collect_files
from imgpipe.testing.processes import ServiceProcesses
from tests.images import image_bytes

IMGPIPE = [sys.executable, "-m", "imgpipe.cli"]
JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")


@pytest.fixture(scope="module")
def imgpipe_url(shared_system: ServiceProcesses) -> str:
    """The four services, shared by this module's tests."""
    return shared_system.upload_url


def imgpipe(
    *args: str | Path, url: str | None = None, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    extra = ["--url", url] if url else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGPIPE_")}
    env |= {"COLUMNS": "400", **env_vars}
    return subprocess.run([*IMGPIPE, *map(str, args), *extra], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """A directory of images, one nested, plus files submit must leave alone."""
    root = tmp_path / "album"
    (root / "nested").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "wide.jpg").write_bytes(image_bytes(800, 400, ".jpg"))
    (root / "nested" / "square.png").write_bytes(image_bytes(300, 300, ".png"))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden" / "skip.png").write_bytes(image_bytes(10, 10, ".png"))
    return root


def test_collect_files_walks_directories(album: Path, tmp_path: Path) -> None:
    found = collect_files([album, album / "wide.jpg"])
    assert [p.relative_to(album).as_posix() for p in found] == ["nested/square.png", "wide.jpg"]
    with pytest.raises(UsageError, match="no such file"):
        collect_files([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        collect_files([tmp_path / "empty"])


def test_collect_files_with_a_glob(album: Path) -> None:
    def names(glob: str) -> list[str]:
        return [p.relative_to(album).as_posix() for p in collect_files([album], glob)]

    assert names("**/*.png") == ["nested/square.png"]  # the hidden one left out
    assert names("*.jpg") == ["wide.jpg"]  # this directory only
    assert names("**/*") == ["nested/square.png", "notes.txt", "wide.jpg"]  # a glob is obeyed
    with pytest.raises(UsageError, match="no images"):
        names("**/*.tif")


def test_submit_waits_and_downloads_outputs(imgpipe_url: str, album: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = imgpipe("submit", album, "--pipeline", "resize:w=200/format:png", "--out", out,
                     url=imgpipe_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline: resize:w=200/format:png" in result.stdout
    assert result.stdout.count("done") >= 2
    saved = {p.name: p for p in out.iterdir()}
    assert set(saved) == {"wide.png", "square.png"}
    wide = pyvips.Image.new_from_file(str(saved["wide.png"]))
    assert (wide.width, wide.height) == (200, 100)

    job_id = JOB_ID.findall(result.stdout)[0]
    shown = imgpipe("jobs", job_id, url=imgpipe_url)
    assert shown.returncode == 0, shown.stderr
    assert "done" in shown.stdout and "resize:w=200/format:png" in shown.stdout
    assert f"/jobs/{job_id}/outputs/0" in shown.stdout
    as_json = imgpipe("jobs", job_id, "--json", url=imgpipe_url)
    assert '"status": "done"' in as_json.stdout
    digest = hashlib.sha256(saved["wide.png"].read_bytes()).hexdigest()
    assert digest in as_json.stdout or digest in imgpipe("jobs", JOB_ID.findall(result.stdout)[1],
                                                         "--json", url=imgpipe_url).stdout


def test_submit_without_wait_prints_queued_jobs(imgpipe_url: str, album: Path) -> None:
    result = imgpipe("submit", album / "wide.jpg", "--preset", "thumbnail", url=imgpipe_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resize:w=256,h=256/format:jpeg" in result.stdout
    assert len(set(JOB_ID.findall(result.stdout))) == 1
    assert re.search(r"queued|processing|done", result.stdout)


def test_submit_reports_refused_files_and_fails(imgpipe_url: str, album: Path) -> None:
    result = imgpipe("submit", album / "wide.jpg", album / "notes.txt", "--wait", url=imgpipe_url)
    assert result.returncode == 1
    assert "unsupported_format" in result.stdout
    assert "notes.txt" in result.stdout and "refused" in result.stdout
    assert re.search(r"wide\.jpg.*done", result.stdout)


def test_submit_refuses_a_bad_pipeline_before_uploading(imgpipe_url: str, album: Path) -> None:
    result = imgpipe("submit", album, "--pipeline", "resize:w=abc", url=imgpipe_url)
    assert result.returncode == 2
    assert "invalid_pipeline" in result.stdout and "resize" in result.stdout
    assert not JOB_ID.search(result.stdout)


def test_jobs_unknown_and_usage_errors(imgpipe_url: str, tmp_path: Path) -> None:
    unknown = imgpipe("jobs", "0" * 32, url=imgpipe_url)
    assert unknown.returncode == 1 and "job_not_found" in unknown.stdout
    missing = imgpipe("submit", tmp_path / "nothing-here.jpg", url=imgpipe_url)
    assert missing.returncode == 2 and "no such file" in missing.stdout
    both = imgpipe("submit", tmp_path, "--preset", "a", "--pipeline", "b")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    (tmp_path / "one.png").write_bytes(image_bytes(20, 20, ".png"))
    down = imgpipe("submit", tmp_path / "one.png", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "unreachable" in down.stdout


def test_token_from_flag_or_environment(system_env: ServiceProcesses, tmp_path: Path) -> None:
    system_env.start("upload-server", UPLOAD_API_TOKENS="client-test-token")
    asyncio.run(system_env.wait_ready("upload-server"))
    url = system_env.upload_url
    image = tmp_path / "one.png"
    image.write_bytes(image_bytes(40, 30, ".png"))
    refused = imgpipe("submit", image, "--preset", "thumbnail", url=url)
    assert refused.returncode == 1 and "missing_token" in refused.stdout
    wrong = imgpipe("submit", image, url=url, IMGPIPE_TOKEN="nope")
    assert wrong.returncode == 1 and "invalid_token" in wrong.stdout
    sent = imgpipe("submit", image, "--token", "client-test-token", url=url)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    [job_id] = set(JOB_ID.findall(sent.stdout))
    shown = imgpipe("jobs", job_id, url=url, IMGPIPE_TOKEN="client-test-token")
    assert shown.returncode == 0 and "queued" in shown.stdout


def test_submit_skips_what_is_already_done(imgpipe_url: str, tmp_path: Path) -> None:
    root = tmp_path / "batch"
    root.mkdir()
    for width in (101, 102, 103):
        (root / f"w{width}.png").write_bytes(image_bytes(width, 50, ".png"))
    pipeline = ("--pipeline", "resize:w=61/format:png")

    first = imgpipe("submit", root, *pipeline, "--wait", url=imgpipe_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 uploaded, 0 skipped" in first.stdout
    first_jobs = set(JOB_ID.findall(first.stdout))
    assert len(first_jobs) == 3

    again = imgpipe("submit", root, *pipeline, url=imgpipe_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 uploaded, 3 skipped" in again.stdout
    assert set(JOB_ID.findall(again.stdout)) == first_jobs  # listed with the jobs that did them

    other = imgpipe("submit", root / "w101.png", "--pipeline", "resize:w=62/format:png",
                    url=imgpipe_url)
    assert "1 uploaded, 0 skipped" in other.stdout, other.stdout  # another pipeline is new work

    (root / "w104.png").write_bytes(image_bytes(104, 50, ".png"))
    added = imgpipe("submit", root, *pipeline, "--out", tmp_path / "out", url=imgpipe_url)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "1 uploaded, 3 skipped" in added.stdout
    assert len(set(JOB_ID.findall(added.stdout)) - first_jobs) == 1
    assert len(list((tmp_path / "out").iterdir())) == 4  # outputs of skipped files too

    forced = imgpipe("submit", root, *pipeline, "--again", url=imgpipe_url)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "4 uploaded, 0 skipped" in forced.stdout
    assert not set(JOB_ID.findall(forced.stdout)) & first_jobs
