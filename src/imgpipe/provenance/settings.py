"""Settings of the provenance service and of the commands that read the record."""

from __future__ import annotations

from pydantic import Field

from imgpipe.runtime.config import (
    AmqpSettings,
    CouchSettings,
    ImageprocClientSettings,
    LogSettings,
    PresetSettings,
    S3Settings,
    TrustSettings,
)


class ProvenanceSettings(AmqpSettings, CouchSettings, LogSettings):
    """`imgpipe provenance`: stores provenance events in CouchDB."""

    provenance_host: str = "127.0.0.1"
    provenance_port: int = Field(default=8002, ge=0, le=65535)
    provenance_prefetch: int = Field(
        default=32, ge=1, le=1000,
        description="Events handled at once; those arriving together are written in one request.",
    )


class VerifySettings(S3Settings, CouchSettings, ImageprocClientSettings, PresetSettings,
                     TrustSettings, LogSettings):
    """`imgpipe verify` and `imgpipe provenance show`: read the record, re-run through imageproc."""
