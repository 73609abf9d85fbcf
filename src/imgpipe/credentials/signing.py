"""Signing encoded images with Content Credentials.

:class:`ContentSigner` holds the key material (PEM text, or a callback for a
key kept in a KMS or HSM) and makes the native c2pa objects lazily, once per
thread: they are not shared between threads and never survive a ``fork()``.
Signing inserts the manifest into the encoded bytes without re-encoding them.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import c2pa

from imgpipe.credentials.embedded import may_carry_credentials, sniff
from imgpipe.credentials.manifest import (
    Step,
    definition,
    media_type,
    overlay_ingredient,
    parent_ingredient,
)
from imgpipe.domain.pipeline.overlay import Watermark
from imgpipe.errors import ConfigError
from imgpipe.runtime.config import C2paSettings, TrustSettings

ALGORITHMS = ("ed25519", "es256", "es384", "es512", "ps256", "ps384", "ps512")
SignCallback = Callable[[bytes], bytes]


def context_settings(anchors: str | None = None) -> dict[str, Any]:
    """c2pa settings imgpipe uses: no thumbnails, nothing fetched, ``anchors`` trusted."""
    settings: dict[str, Any] = {
        "builder": {"thumbnail": {"enabled": False}},
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    }
    if anchors:
        settings["trust"] = {"user_anchors": anchors}
    return settings


def read_pem(path: Path | None, variable: str) -> str | None:
    """The text of a PEM file named by a setting, or a ConfigError naming the setting."""
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc}") from None
    if "-----BEGIN " not in text:
        raise ConfigError(f"{variable}: {path} holds no PEM block")
    return text


def import_callback(spec: str) -> SignCallback:
    """``module:function`` -> the function (C2PA_SIGNER_CALLBACK)."""
    module, _, name = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"C2PA_SIGNER_CALLBACK: cannot import {spec}: {exc}") from None
    if not callable(found):
        raise ConfigError(f"C2PA_SIGNER_CALLBACK: {spec} is not callable")
    callback: SignCallback = found
    return callback


@dataclass(frozen=True)
class SigningKey:
    """Everything needed to sign: certificate chain (leaf first) and key or callback."""

    chain: str
    alg: str = "ed25519"
    private_key: str | None = None
    callback: SignCallback | None = None
    tsa_url: str | None = None
    anchors: str | None = None
    record_url: str | None = None

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise ConfigError(f"C2PA_ALG: {self.alg} is not one of {', '.join(ALGORITHMS)}")
        if (self.private_key is None) == (self.callback is None):
            raise ConfigError("C2PA_PRIVATE_KEY or C2PA_SIGNER_CALLBACK: give exactly one")

    def native_signer(self) -> c2pa.Signer:
        if self.callback is not None:
            alg = c2pa.C2paSigningAlg[self.alg.upper()]
            return c2pa.Signer.from_callback(self.callback, alg, self.chain, self.tsa_url)
        assert self.private_key is not None
        info = c2pa.C2paSignerInfo(self.alg.encode(), self.chain.encode(),
                                   self.private_key.encode(), self.tsa_url)
        return c2pa.Signer.from_info(info)


class _ParentUnreadable(Exception):
    """c2pa could not read the input as an ingredient (only that is worth a second try)."""


class ContentSigner:
    """Signs encoded outputs; safe to call from many threads at once."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self._local = threading.local()

    def check(self) -> None:
        """Make the native signer once now, so a bad key fails at start, not per image."""
        self._native()

    def _native(self) -> tuple[c2pa.Context, c2pa.Signer]:
        made: tuple[c2pa.Context, c2pa.Signer] | None = getattr(self._local, "made", None)
        if made is None:
            try:
                made = (c2pa.Context.from_dict(context_settings(self.key.anchors)),
                        self.key.native_signer())
            except c2pa.C2paError as exc:
                raise ConfigError(f"C2PA signing key refused: {exc}") from None
            self._local.made = made
        return made

    def sign(self, payload: bytes, step: Step, source: bytes,
             overlays: Mapping[str, bytes] | None = None) -> bytes:
        """``payload`` (encoded by libvips) with a signed manifest describing ``step``.

        ``source`` is the input's bytes: c2pa reads its own Content Credentials,
        if it has any, into the parent ingredient, so the history continues.
        """
        used = {op.image for op in step.pipeline.steps
                if isinstance(op, Watermark) and op.image and op.image in (overlays or {})}
        if step.record_url is None and self.key.record_url:
            step = replace(step, record_url=self.key.record_url)
        if not may_carry_credentials(source):
            # nothing to keep: c2pa would parse the whole input for nothing (8 MB PNG: ~150 ms)
            return self._sign(payload, step, source, overlays or {}, frozenset(used), False)
        try:
            return self._sign(payload, step, source, overlays or {}, frozenset(used), True)
        except _ParentUnreadable:
            # the input's bytes (or the credentials in them) do not parse: the parent is
            # then recorded by title, format and sha256 only
            return self._sign(payload, step, source, overlays or {}, frozenset(used), False)

    def _sign(self, payload: bytes, step: Step, source: bytes, overlays: Mapping[str, bytes],
              used: frozenset[str], read_parent: bool) -> bytes:
        context, signer = self._native()
        manifest = definition(step, used)
        if not read_parent:
            manifest["ingredients"] = [parent_ingredient(step)]
        with c2pa.Builder(manifest, context) as builder:
            if read_parent:
                try:
                    builder.add_ingredient(parent_ingredient(step),
                                           media_type(step.input_format), io.BytesIO(source))
                except c2pa.C2paError as exc:
                    raise _ParentUnreadable(str(exc)) from None
            for name in sorted(used):
                data = overlays[name]
                builder.add_ingredient(
                    overlay_ingredient(name, sniff(data), hashlib.sha256(data).hexdigest()),
                    media_type(sniff(data)), io.BytesIO(data))
            signed = io.BytesIO()
            builder.sign(signer, media_type(step.pipeline.output_format), io.BytesIO(payload),
                         signed)
        return signed.getvalue()


def trust_anchors(settings: TrustSettings) -> str | None:
    """The PEM text of C2PA_TRUST_ANCHORS, or None when unset."""
    return read_pem(settings.c2pa_trust_anchors, "C2PA_TRUST_ANCHORS")


def signer_from(settings: C2paSettings) -> ContentSigner | None:
    """The signer C2PA_* settings describe (checked now), or None when signing is off."""
    if not settings.c2pa_sign:
        return None
    chain = read_pem(settings.c2pa_cert_chain, "C2PA_CERT_CHAIN")
    assert chain is not None  # the settings require it when signing is on
    key = SigningKey(
        chain=chain, alg=settings.c2pa_alg,
        private_key=read_pem(settings.c2pa_private_key, "C2PA_PRIVATE_KEY"),
        callback=(import_callback(settings.c2pa_signer_callback)
                  if settings.c2pa_signer_callback else None),
        tsa_url=settings.c2pa_tsa_url, anchors=trust_anchors(settings),
        record_url=settings.c2pa_record_url,
    )
    signer = ContentSigner(key)
    signer.check()
    return signer
