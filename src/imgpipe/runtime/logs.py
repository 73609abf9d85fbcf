"""Structured logging: one JSON object per line, with the job id when known.

Set the job a piece of work belongs to with :func:`job_context`; every log
line emitted inside it (in that task) carries ``job_id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("imgpipe_job_id", default=None)
_service: str = "imgpipe"

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

_secrets: set[str] = set()
_URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@", re.IGNORECASE)
MASK = "***"


def register_secrets(values: Iterable[str]) -> None:
    """Values (passwords, keys, tokens) that :func:`redact` removes from any text."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def secrets_of(settings: object) -> list[str]:
    """The secret values of a settings object (its ``SecretStr`` fields and token lists)."""
    found: list[str] = []
    for value in vars(settings).values():
        get = getattr(value, "get_secret_value", None)
        if get is not None:
            secret = str(get())
            found.append(secret)
            found.extend(part.strip() for part in secret.split(",") if part.strip())
    url = getattr(settings, "amqp_url", None)
    if isinstance(url, str):
        match = _URL_CREDENTIALS.search(url)
        if match and match.group(3):
            found.append(match.group(3))
    return found


def redact(text: str) -> str:
    """``text`` without registered secrets and without passwords in URLs."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": _service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        job = getattr(record, "job_id", None) or _job_id.get()
        if job:
            line["job_id"] = job
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in line and not key.startswith("_"):
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job_id", None) or _job_id.get()
        prefix = f"[{job[:8]}] " if job else ""
        text = f"{record.levelname[0]} {_service} {prefix}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route all logging to stderr as structured lines for ``service``."""
    global _service
    _service = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "botocore", "aiobotocore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
