"""Typed settings, read once at start by the CLI and passed down.

Variable names are the seed's promise to users (``RABBITMQ_USER``,
``S3_INPUT_BUCKET``, ``COUCHDB_DB``, ...); each field's name is its
environment variable, upper-cased. Nothing here reads the environment at
import time: call :func:`load` from the edge of the program.

A renamed variable keeps working for one release: a group lists it in
``renamed`` (old field → new field), the old value applies when the new
variable is not set, and :meth:`deprecations` says so (services log it at
start).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from imgpipe.broker.policy import RetryPolicy, parse_delays
from imgpipe.domain.events import MAX_PIPELINES
from imgpipe.errors import ConfigError

if TYPE_CHECKING:
    from imgpipe.domain.pipeline import Preset

_PRINCIPAL = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_BASE_CONFIG = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=None)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value.rstrip("/")


def _check_backend_url(value: str) -> str:
    """A server's http(s):// URL, or a file:// URL selecting the embedded backend."""
    if urlsplit(value).scheme == "file":
        return value
    try:
        return _check_http_url(value)
    except ValueError:
        raise ValueError(
            "expected an http:// or https:// URL with a host, or file:///dir (embedded)"
        ) from None


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
"""A server's ``http(s)://`` URL (without a trailing slash)."""

BackendUrl = Annotated[str, AfterValidator(_check_backend_url)]
"""A server's ``http(s)://`` URL, or ``file:///dir`` for the embedded backend."""


class _Renaming(BaseSettings):
    """Settings whose renamed variables still work, for one release."""

    model_config = _BASE_CONFIG

    renamed: ClassVar[Mapping[str, str]] = {}
    """Deprecated field → the field that replaces it."""

    @model_validator(mode="after")
    def _apply_renamed(self) -> Any:
        for old, new in self.renamed.items():
            value = getattr(self, old)
            if value is not None and new not in self.model_fields_set:
                setattr(self, new, value)
        return self

    def deprecations(self) -> list[str]:
        """A sentence for each deprecated variable this configuration sets."""
        return [
            f"{old.upper()} is deprecated and will be removed in the next release; "
            f"it sets {new.upper()} here: set that instead"
            for old, new in self.renamed.items() if getattr(self, old) is not None
        ]


class AmqpSettings(BaseSettings):
    """RabbitMQ connection and the exchanges a stage subscribes and publishes to."""

    model_config = _BASE_CONFIG

    amqp_url: str | None = Field(
        default=None,
        description="Full AMQP URL; when set it wins over host, user and password. "
        "Several comma-separated amqp(s):// URLs name the nodes of a RabbitMQ cluster "
        "(clients use the first that answers and move on when theirs dies). "
        "file:///dir selects the embedded broker kept in dir.",
    )
    amqp_host: str = "127.0.0.1"
    amqp_port: int = Field(default=5672, ge=1, le=65535)
    amqp_vhost: str = "/"
    rabbitmq_user: str = "guest"
    rabbitmq_password: SecretStr = SecretStr("guest")
    amqp_exchange_subscribe: str = Field(default="uploaded", min_length=1, max_length=200)
    amqp_exchange_publish: str = Field(default="processed", min_length=1, max_length=200)
    amqp_exchange_prov: str = Field(default="provenance", min_length=1, max_length=200)
    amqp_prefetch: int = Field(default=4, ge=1, le=1000)
    amqp_retry_delays: str = Field(
        default="1,5,30,120",
        description="Seconds before each retry of a failed message; their count bounds attempts.",
    )
    amqp_queue_type: Literal["quorum", "classic"] = Field(
        default="quorum",
        description="Type of every queue imgpipe declares on RabbitMQ: quorum (replicated, "
        "survives a node) or classic (brokers without quorum queues).",
    )
    amqp_delivery_limit: int = Field(
        default=20, ge=1, le=10_000,
        description="Quorum queues: deliveries after which a message that is never settled "
        "(it crashes every consumer) goes to the dead-letter queue.",
    )

    @field_validator("amqp_retry_delays")
    @classmethod
    def _check_retry_delays(cls, value: str) -> str:
        parse_delays(value)
        return value

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(parse_delays(self.amqp_retry_delays))

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # `AMQP_URL=` (empty, as .env.example has it) means unset
        schemes = [urlsplit(part.strip()).scheme for part in value.split(",") if part.strip()]
        if schemes == ["file"] or (schemes and all(s in ("amqp", "amqps") for s in schemes)):
            return value
        raise ValueError("expected an amqp:// or amqps:// URL (several, comma-separated, for "
                         "the nodes of a cluster), or file:///dir (embedded)")

    def broker_url(self) -> str:
        """The AMQP URL to connect to (secrets included: never log it)."""
        if self.amqp_url:
            return self.amqp_url
        user = quote(self.rabbitmq_user, safe="")
        password = quote(self.rabbitmq_password.get_secret_value(), safe="")
        vhost = quote(self.amqp_vhost, safe="")
        return f"amqp://{user}:{password}@{self.amqp_host}:{self.amqp_port}/{vhost}"


class S3Settings(BaseSettings):
    """The S3-compatible object store and its two buckets."""

    model_config = _BASE_CONFIG

    s3_url: BackendUrl = "http://127.0.0.1:8333"
    s3_access_key: str = "imgpipe"
    s3_secret_key: SecretStr = SecretStr("imgpipe-secret")
    s3_region: str = "us-east-1"
    s3_input_bucket: str = Field(default="imgpipe-input", min_length=3, max_length=63)
    s3_output_bucket: str = Field(default="imgpipe-output", min_length=3, max_length=63)
    s3_create_buckets: bool = True


class CouchSettings(BaseSettings):
    """The CouchDB server that keeps provenance."""

    model_config = _BASE_CONFIG

    couchdb_url: BackendUrl = "http://127.0.0.1:5984"
    couchdb_user: str = "admin"
    couchdb_password: SecretStr = SecretStr("imgpipe-secret")
    couchdb_db: str = Field(default="provenance", pattern=r"^[a-z][a-z0-9_$()+/-]*$")


class LogSettings(_Renaming):
    log_level: str = Field(default="INFO", pattern=r"(?i)^(debug|info|warning|error)$")
    log_format: str = Field(default="json", pattern=r"^(json|text)$")
    shutdown_grace: float = Field(default=20.0, ge=0, description="Seconds in-flight work may take at SIGTERM.")


class PresetSettings(BaseSettings):
    """The presets file every service that names pipelines reads (``IMGPIPE_PRESETS``)."""

    model_config = _BASE_CONFIG

    imgpipe_presets: str | None = Field(
        default=None,
        description="User presets: a TOML/JSON file path (or inline JSON) of named pipelines "
        "with descriptions; a bad entry stops the service at start.",
    )

    @field_validator("imgpipe_presets")
    @classmethod
    def _check_presets(cls, value: str | None) -> str | None:
        from imgpipe.domain.pipeline import PresetError, read_presets

        try:
            read_presets(value)
        except PresetError as exc:
            raise ValueError(exc.message.removeprefix("IMGPIPE_PRESETS: ")) from None
        return value

    def presets(self) -> dict[str, Preset]:
        """The user presets, by name (validated when the settings were loaded)."""
        from imgpipe.domain.pipeline import read_presets

        return read_presets(self.imgpipe_presets)

    def preset_pipelines(self) -> dict[str, str]:
        """The user presets as name → canonical pipeline, for :func:`parse_pipeline`."""
        return {name: preset.pipeline for name, preset in self.presets().items()}


class TrustSettings(BaseSettings):
    """The certificate authorities whose Content Credentials signers are trusted."""

    model_config = _BASE_CONFIG

    c2pa_trust_anchors: Path | None = Field(
        default=None, description="PEM file of CA certificates whose signers are trusted.")


class C2paSettings(TrustSettings):
    """Content Credentials: how imageproc signs every output (C2PA)."""

    c2pa_sign: bool = Field(default=False, description="on: sign every output (C2PA).")
    c2pa_cert_chain: Path | None = Field(
        default=None, description="PEM file: signing certificate first, then its CAs.")
    c2pa_private_key: Path | None = Field(
        default=None, description="PEM file: the signing certificate's private key.")
    c2pa_signer_callback: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function signing bytes (a KMS or HSM) instead of C2PA_PRIVATE_KEY.")
    c2pa_alg: str = Field(default="ed25519",
                          pattern=r"^(ed25519|es256|es384|es512|ps256|ps384|ps512)$")
    c2pa_tsa_url: str | None = Field(default=None, description="RFC 3161 time-stamp authority.")
    c2pa_record_url: str | None = Field(
        default=None,
        description="Where a job's PROV record is, for the signed assertion; {job_id} is replaced.")

    @field_validator("c2pa_tsa_url")
    @classmethod
    def _check_tsa(cls, value: str | None) -> str | None:
        return _check_http_url(value) if value else None

    @model_validator(mode="after")
    def _complete(self) -> C2paSettings:
        if self.c2pa_sign:
            if self.c2pa_cert_chain is None:
                raise ValueError("C2PA_SIGN is on: set C2PA_CERT_CHAIN (a PEM file)")
            if (self.c2pa_private_key is None) == (self.c2pa_signer_callback is None):
                raise ValueError("C2PA_SIGN is on: set C2PA_PRIVATE_KEY or "
                                 "C2PA_SIGNER_CALLBACK (exactly one)")
        return self


class ImageprocClientSettings(_Renaming):
    """Where a service that sends images to imageproc (the runner; upload and
    ``imgpipe verify`` re-running a recorded step) finds it, and how long it waits."""

    imageproc_url: HttpUrl = "http://127.0.0.1:8080"
    imageproc_client_timeout: float = Field(
        default=120.0, gt=0, description="Seconds to wait for imageproc's answer to one image.")
    imageproc_timeout: float | None = Field(
        default=None, gt=0, description="Deprecated: IMAGEPROC_CLIENT_TIMEOUT here.")

    renamed: ClassVar[Mapping[str, str]] = {"imageproc_timeout": "imageproc_client_timeout"}


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


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, -(-int(quota) // int(period))))


class ImageprocSettings(PresetSettings, C2paSettings, LogSettings):
    """`imgpipe imageproc`: the libvips HTTP service."""

    imageproc_host: str = "127.0.0.1"
    imageproc_port: int = Field(default=8080, ge=0, le=65535)
    imageproc_workers: int = Field(
        default_factory=usable_cpus,
        ge=1,
        le=64,
        description=(
            "Images processed at once (threads running libvips); default one per usable CPU "
            "(affinity and cgroup quota)."
        ),
    )
    imageproc_vips_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "libvips threads per image (its VIPS_CONCURRENCY). One per worker measured best "
            "for a server (docs/benchmarks.md): parallelism comes from the workers."
        ),
    )
    imageproc_queue: int = Field(default=32, ge=0, description="Requests waiting beyond the workers before 429.")
    imageproc_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    imageproc_max_pixels: int = Field(default=50_000_000, ge=1)
    imageproc_deadline: float = Field(
        default=60.0, gt=0, description="Seconds libvips may spend on one image (then 504).")
    imageproc_timeout: float | None = Field(
        default=None, gt=0, description="Deprecated: IMAGEPROC_DEADLINE here.")
    imageproc_max_frames: int = Field(default=1000, ge=1, description="Most frames an input may have.")
    imageproc_max_output_dimension: int = Field(default=16384, ge=1, le=65535)
    imageproc_formats: str = Field(
        default="jpeg,png,webp,avif,tiff,gif", description="Input formats allowed (comma-separated)."
    )
    imageproc_overlays: str | None = Field(
        default=None, description="Directory of watermark images, named by file stem."
    )

    renamed: ClassVar[Mapping[str, str]] = {"imageproc_timeout": "imageproc_deadline"}


class RunnerSettings(AmqpSettings, S3Settings, ImageprocClientSettings, PresetSettings,
                     LogSettings):
    """`imgpipe runner`: consumes a stage's events and drives imageproc."""

    runner_stage: str | None = Field(
        default=None, description="Stage name; defaults to the publish exchange's name."
    )
    runner_pipeline: str | None = Field(
        default=None, description="Pipeline of this stage; default: the one carried by each event."
    )
    runner_host: str = "127.0.0.1"
    runner_port: int = Field(default=8001, ge=0, le=65535)

    @model_validator(mode="after")
    def _canonical_pipeline(self) -> RunnerSettings:
        """The canonical form (what provenance records and verification re-runs).

        A preset name is resolved with the presets file; a name imgpipe does
        not know here is kept as given: imageproc decides.
        """
        from imgpipe.domain.pipeline import PipelineError, parse_pipeline

        value = self.runner_pipeline
        if value is None or not value.strip():
            self.runner_pipeline = None
            return self
        try:
            self.runner_pipeline = parse_pipeline(value, self.preset_pipelines()).canonical()
        except PipelineError:
            self.runner_pipeline = value.strip()
        return self

    @property
    def stage(self) -> str:
        return self.runner_stage or self.amqp_exchange_publish


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


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment plus explicit overrides (CLI flags).

    A missing or malformed variable raises :class:`ConfigError` whose message
    names the variable, e.g. ``AMQP_PORT: Input should be a valid integer``.
    """
    try:
        build: Any = cls
        settings: S = build(**{k: v for k, v in overrides.items() if v is not None})
        return settings
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else cls.__name__
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
