"""The upload service's settings: each field is the environment variable of its name."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import Field, SecretStr

from imgpipe.domain.events import MAX_PIPELINES
from imgpipe.runtime.config import (
    AmqpSettings,
    CouchSettings,
    ImageprocClientSettings,
    LogSettings,
    PresetSettings,
    S3Settings,
    TrustSettings,
)

_PRINCIPAL = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class UploadSettings(AmqpSettings, S3Settings, CouchSettings, ImageprocClientSettings,
                     PresetSettings, TrustSettings, LogSettings):
    """`imgpipe upload-server`: the HTTP entry point."""

    upload_host: str = "127.0.0.1"
    upload_port: int = Field(default=8000, ge=0, le=65535)
    upload_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    upload_max_files: int = Field(default=32, ge=1)
    upload_default_pipeline: str = "thumbnail"
    upload_max_pipelines: int = Field(
        default=16, ge=1, le=MAX_PIPELINES,
        description="Most distinct pipelines one upload may ask for (each file runs every one).",
    )
    upload_api_tokens: SecretStr | None = Field(
        default=None,
        description="Comma-separated bearer tokens, each 'name:token' (the name is the "
        "principal that owns the jobs it uploads) or a plain token; when set, the API needs one.",
    )
    upload_visibility: Literal["all", "own"] = Field(
        default="all",
        description="'own': a principal sees only the jobs it uploaded (status, outputs, input, "
        "provenance, lineage, verify); 'all': every job (one team).",
    )
    upload_record_client_address: bool = Field(
        default=False, description="Record the uploader's IP address in the job's provenance."
    )
    upload_read_timeout: float = Field(
        default=30.0, gt=0, description="Seconds an upload may send nothing before it is refused."
    )
    upload_header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's line and headers."
    )
    upload_request_timeout: float = Field(
        default=900.0, gt=0, description="Seconds one upload may take in all, however it trickles."
    )
    upload_verify_per_minute: float = Field(
        default=10.0, gt=0,
        description="Verifications that re-run steps through imageproc a principal may start "
        "a minute (as a burst of as many).",
    )
    upload_verify_cache_seconds: float = Field(
        default=600.0, ge=0, description="Seconds a verification re-run (input, pipeline, "
        "software versions) is answered again from memory (0: never)."
    )
    upload_heavy_concurrency: int = Field(
        default=2, ge=1, description="Heavy requests (verification, PROV export) run at once; "
        "one more gets 429.",
    )

    upload_ingest_buckets: str = Field(
        default="",
        description="Comma-separated buckets whose objects POST /ingest (imgpipe ingest) may "
        "turn into jobs without uploading them; empty: ingest is off.",
    )
    upload_ingest_parallel: int = Field(
        default=4, ge=1, le=64, description="Objects one ingest run reads at once."
    )

    upload_status_stages: str = Field(
        default="",
        description="Exchanges of further stages (chained runners) GET /status shows beside "
        "AMQP_EXCHANGE_SUBSCRIBE and AMQP_EXCHANGE_PROV, comma-separated.",
    )
    upload_operators: str = Field(
        default="",
        description="Comma-separated principals (names of UPLOAD_API_TOKENS) who may replay "
        "dead letters from the page and see every dead letter; empty: nobody may.",
    )

    def operators(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.upload_operators.split(",") if p.strip())

    def ingest_buckets(self) -> tuple[str, ...]:
        return tuple(b.strip() for b in self.upload_ingest_buckets.split(",") if b.strip())

    def api_tokens(self) -> dict[str, str]:
        """Principal name by token: 'name:token' entries, and plain tokens named by their hash."""
        raw = self.upload_api_tokens.get_secret_value() if self.upload_api_tokens else ""
        tokens: dict[str, str] = {}
        for entry in (t.strip() for t in raw.split(",")):
            name, sep, token = entry.partition(":")
            if sep and _PRINCIPAL.fullmatch(name) and token:
                tokens[token] = name
            elif entry:
                tokens[entry] = "token-" + hashlib.sha256(entry.encode()).hexdigest()[:8]
        return tokens
