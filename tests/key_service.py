"""A stand-in for a key service: signs with a key file it alone reads (C2PA_SIGNER_CALLBACK)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def sign(data: bytes) -> bytes:
    key = serialization.load_pem_private_key(
        Path(os.environ["IMGPIPE_TEST_SIGNING_KEY"]).read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.sign(data)
