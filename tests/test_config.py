"""Settings: the seed's variable names, defaults that work locally, clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imgpipe.commands.dev import DevSettings
from imgpipe.errors import ConfigError
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.provenance.settings import VerifySettings
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime.config import load
from imgpipe.upload.settings import UploadSettings


def test_seed_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITMQ_USER", "alice")
    monkeypatch.setenv("RABBITMQ_PASSWORD", "p@ss/word")
    monkeypatch.setenv("S3_INPUT_BUCKET", "in-bucket")
    monkeypatch.setenv("COUCHDB_DB", "prov-db")
    monkeypatch.setenv("AMQP_EXCHANGE_PROV", "prov-x")
    settings = load(UploadSettings)
    assert settings.s3_input_bucket == "in-bucket"
    assert settings.couchdb_db == "prov-db"
    assert settings.amqp_exchange_prov == "prov-x"
    assert settings.broker_url() == "amqp://alice:p%40ss%2Fword@127.0.0.1:5672/%2F"


def test_amqp_url_wins_over_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@broker:5673/v")
    assert load(RunnerSettings).broker_url() == "amqp://u:p@broker:5673/v"


def test_defaults_match_the_seed_ports() -> None:
    settings = load(UploadSettings)
    assert settings.upload_port == 8000
    assert settings.amqp_exchange_subscribe == "uploaded"
    assert settings.amqp_exchange_publish == "processed"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AMQP_PORT", "not-a-port"), ("S3_URL", "ftp://nowhere"), ("COUCHDB_DB", "Bad Name"),
     ("UPLOAD_PORT", "70000")],
)
def test_malformed_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load(UploadSettings)
    assert variable in caught.value.message


def test_service_exits_at_start_with_one_line_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imgpipe.cli", "runner"],
        env={"AMQP_PORT": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AMQP_PORT" in lines[0], result.stderr


@pytest.mark.parametrize("command", ["upload-server", "runner", "imageproc", "provenance"])
def test_every_service_has_help(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imgpipe.cli", command, "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0
    assert "usage: imgpipe" in result.stdout
    if command != "provenance":
        assert "--port" in result.stdout


def test_imageproc_limits_are_two_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(ImageprocSettings).imageproc_deadline == 60
    assert load(RunnerSettings).imageproc_client_timeout == 120
    monkeypatch.setenv("IMAGEPROC_DEADLINE", "5")
    monkeypatch.setenv("IMAGEPROC_CLIENT_TIMEOUT", "7")
    assert load(ImageprocSettings).imageproc_deadline == 5
    for client in (RunnerSettings, UploadSettings, VerifySettings):
        settings = load(client)
        assert settings.imageproc_client_timeout == 7 and not settings.deprecations()


def test_imageproc_timeout_keeps_its_old_meaning_for_one_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEPROC_TIMEOUT", "9")
    imageproc, runner = load(ImageprocSettings), load(RunnerSettings)
    assert imageproc.imageproc_deadline == 9 and runner.imageproc_client_timeout == 9
    [line] = imageproc.deprecations()
    assert "IMAGEPROC_TIMEOUT is deprecated" in line and "IMAGEPROC_DEADLINE" in line
    [line] = runner.deprecations()
    assert "IMAGEPROC_CLIENT_TIMEOUT" in line
    monkeypatch.setenv("IMAGEPROC_CLIENT_TIMEOUT", "30")
    assert load(RunnerSettings).imageproc_client_timeout == 30  # the new name wins


def test_dev_sets_the_deadline_and_the_client_timeout_apart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IMAGEPROC_DEADLINE", "5")
    dev = DevSettings.build(data_dir=tmp_path)
    assert dev.imageproc.imageproc_deadline == 5
    assert dev.runner.imageproc_client_timeout == dev.upload.imageproc_client_timeout == 120
