"""Typed settings, read once at start by the CLI and passed down.

Variable names are the seed's promise to users (``RABBITMQ_USER``,
``S3_INPUT_BUCKET``, ``COUCHDB_DB``, ...); each field's name is its
environment variable, upper-cased. Nothing here reads the environment at
import time: call :func:`load` from the edge of the program.

A renamed variable keeps working for one release: a group lists it in
``renamed`` (old field → new field), the old value applies when the new
variable is not set, and :meth:`deprecations` says so (services log it at
start).

This module holds what several services share (the backends' settings, logs,
presets, trust, the imageproc client, :func:`load`); each service's own
settings class lives in its folder (``upload/settings.py``,
``runner/settings.py``, ``imageproc/settings.py``, ``provenance/settings.py``).
"""

from __future__ import annotations

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
from imgpipe.errors import ConfigError

if TYPE_CHECKING:
    from imgpipe.domain.pipeline import Preset

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
    amqp_idle_renew: float = Field(
        default=30.0, ge=0, le=86_400,
        description="Seconds a consumer with no message waits before it subscribes again on a "
        "new channel, returning to the queue deliveries that never reached it (a quorum "
        "queue's leader dying mid-delivery); 0 turns this off.",
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
