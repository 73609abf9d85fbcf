"""Test helpers for Content Credentials: a chain per test, signing, the second reader."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from imgpipe.credentials.chain import ChainFiles, make_chain
from imgpipe.credentials.manifest import Step
from imgpipe.credentials.signing import ContentSigner, SigningKey
from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.imageproc.engine import process
from imgpipe.testing.node import install_c2pa_ts

VERIFY_SCRIPT = Path(__file__).resolve().parent / "c2pa_ts" / "verify.mjs"


def signer_for(files: ChainFiles, **options: Any) -> ContentSigner:
    return ContentSigner(SigningKey(chain=files.chain.read_text(),
                                    private_key=files.key.read_text(), **options))


def chain_in(directory: Path, **options: Any) -> ChainFiles:
    return make_chain(directory, **options)


def signed(signer: ContentSigner, source: bytes, pipeline: str, *, input_format: str = "jpeg",
           job_id: str | None = None, stage: str | None = None) -> tuple[bytes, bytes]:
    """``source`` through ``pipeline`` (in process), then signed: (payload, signed bytes)."""
    parsed = parse_pipeline(pipeline)
    result = process(source, parsed)
    step = Step(pipeline=parsed, input_sha256=hashlib.sha256(source).hexdigest(),
                input_format=input_format, payload_sha256=result.sha256,
                job_id=job_id, stage=stage)
    return result.data, signer.sign(result.data, step, source)


def flip_in_payload(payload: bytes, signed_bytes: bytes) -> bytes:
    """``signed_bytes`` with one bit flipped inside the image data (not the manifest)."""
    middle = len(payload) // 2
    at = signed_bytes.find(payload[middle - 32:middle + 32])
    assert at >= 0, "the payload is not inside the signed file unchanged"
    changed = bytearray(signed_bytes)
    changed[at + 32] ^= 0x01
    return bytes(changed)


def second_reader(paths: list[Path]) -> list[dict[str, Any]]:
    """Validate files with c2pa-ts (TypeScript, independent of c2pa-rs)."""
    node_dir = install_c2pa_ts()
    done = subprocess.run(
        ["node", "--input-type=module", "-", *map(str, paths)], input=VERIFY_SCRIPT.read_text(),
        cwd=node_dir, capture_output=True, text=True, timeout=60, check=True,
    )
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found
