"""The presets file: one TOML file of named pipelines that every service and the page read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imgpipe.domain.pipeline import PresetError, all_presets, parse_pipeline, read_presets
from imgpipe.errors import ConfigError
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime.config import load
from imgpipe.upload.settings import UploadSettings

GOOD = """\
[presets.banner]
description = "Wide banner for the project page"
pipeline = "resize:w=1200,h=300,fit=cover/format:webp"

[presets.gray-tiles]
pipeline = [{op = "resize", w = 64}, {op = "format", format = "png"}]

[presets]
small = "resize:w=64/format:png"
thumbnail = "resize:w=96/format:jpeg"
"""


def _write(tmp_path: Path, text: str, name: str = "presets.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _imgpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgpipe.cli", *args], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_a_presets_file_gives_named_pipelines_with_descriptions(tmp_path: Path) -> None:
    presets = read_presets(str(_write(tmp_path, GOOD)))
    assert list(presets) == ["banner", "gray-tiles", "small", "thumbnail"]
    assert presets["banner"].description == "Wide banner for the project page"
    assert presets["banner"].pipeline == "resize:w=1200,h=300,fit=cover/format:webp"
    assert presets["gray-tiles"].pipeline == "resize:w=64/format:png"
    assert presets["small"].description == ""
    table = all_presets(presets)
    assert table["thumbnail"].pipeline == "resize:w=96/format:jpeg"
    assert not table["thumbnail"].builtin and table["web"].builtin
    assert table["web"].description
    pipelines = {n: p.pipeline for n, p in presets.items()}
    assert parse_pipeline("banner", pipelines).output_format == "webp"


@pytest.mark.parametrize(
    ("text", "entry", "words"),
    [
        ('[presets.wide]\npipeline = "resize:w=0/format:png"\n', "wide", ["'w'", "resize"]),
        ('[presets.wide]\ndescription = "no pipeline"\n', "wide", ["has no 'pipeline'"]),
        ('[presets.wide]\npipeline = "format:png"\ncolour = "red"\n', "wide", ["'colour'"]),
        ('[presets.wide]\npipeline = "format:png"\ndescription = 3\n', "wide", ["description"]),
        ('[presets]\nok = "format:png"\n"Bad Name" = "format:png"\n', "Bad Name", ["lower-case"]),
        ('[presets]\nnested = 5\n', "nested", ["pipeline text"]),
        ('[presets]\nzoomed = "zoom:3"\n', "zoomed", ["unknown operation", "zoom"]),
    ],
)
def test_a_bad_entry_is_named(tmp_path: Path, text: str, entry: str, words: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PresetError) as caught:
        read_presets(str(path))
    message = caught.value.message
    assert f"preset {entry!r}" in message and str(path) in message, message
    assert caught.value.details["preset"] == entry
    for word in words:
        assert word in message, (word, message)


def test_a_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "[presets\nbanner = 1\n")
    with pytest.raises(PresetError) as caught:
        read_presets(str(path))
    assert str(path) in caught.value.message and "does not parse" in caught.value.message


@pytest.mark.parametrize("settings", [UploadSettings, RunnerSettings, ImageprocSettings])
def test_every_service_refuses_to_start_on_a_bad_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: type[UploadSettings]
) -> None:
    monkeypatch.setenv("IMGPIPE_PRESETS", str(_write(tmp_path, GOOD + 'broken = "resize"\n')))
    with pytest.raises(ConfigError) as caught:
        load(settings)
    assert "IMGPIPE_PRESETS" in caught.value.message and "'broken'" in caught.value.message


def test_services_read_the_same_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGPIPE_PRESETS", str(_write(tmp_path, GOOD)))
    monkeypatch.setenv("RUNNER_PIPELINE", "banner")
    runner = load(RunnerSettings)
    assert runner.runner_pipeline == "resize:w=1200,h=300,fit=cover/format:webp"
    assert load(UploadSettings).preset_pipelines() == load(ImageprocSettings).preset_pipelines()


def test_presets_check_command(tmp_path: Path) -> None:
    good = _imgpipe("presets", "check", str(_write(tmp_path, GOOD)))
    assert good.returncode == 0, good.stderr
    assert "4 preset(s) valid" in good.stdout and "banner" in good.stdout
    bad = _write(tmp_path, GOOD + '[presets.worse]\npipeline = "format:bmp"\n', "bad.toml")
    refused = _imgpipe("presets", "check", str(bad))
    assert refused.returncode == 1
    assert "preset 'worse'" in refused.stderr and "bmp" in refused.stderr, refused.stderr
    missing = _imgpipe("presets", "check", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "cannot be read" in missing.stderr


def test_presets_list_command(tmp_path: Path) -> None:
    listed = _imgpipe("presets", "list", "--json",
                      env={"IMGPIPE_PRESETS": str(_write(tmp_path, GOOD))})
    assert listed.returncode == 0, listed.stderr
    by_name = {p["name"]: p for p in json.loads(listed.stdout)}
    assert by_name["banner"]["description"] == "Wide banner for the project page"
    assert by_name["thumbnail"] == {"name": "thumbnail", "pipeline": "resize:w=96/format:jpeg",
                                    "description": "", "builtin": False}
    assert by_name["dither"]["builtin"]
