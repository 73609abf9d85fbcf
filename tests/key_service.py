"""A stand-in for a key service: signs with a key file it alone reads (C2PA_SIGNER_CALLBACK)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def _key() -> object:
    return serialization.load_pem_private_key(
        Path(os.environ["IMGPIPE_TEST_SIGNING_KEY"]).read_bytes(), password=None)


def sign(data: bytes) -> bytes:
    """Ed25519: the 64-byte signature."""
    key = _key()
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.sign(data)


def sign_es256(data: bytes) -> bytes:
    """ECDSA P-256 with SHA-256, DER-encoded as cloud KMSs answer."""
    key = _key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))
