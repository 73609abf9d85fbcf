"""Signing imageproc's outputs: right after libvips encodes, in the same worker thread.

The caller (a runner) names the step: job, stage, the input's sha256 and file
name. imageproc hashes the input itself and refuses a mismatch, so the
parent ingredient's binding is what imageproc saw, not what it was told.
Without a job (direct use, verification re-runs) the output is still signed,
with no job or stage in ``org.imgpipe.step``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

import c2pa

from imgpipe import __version__
from imgpipe.credentials.manifest import Step
from imgpipe.credentials.signing import ContentSigner
from imgpipe.domain.pipeline import Pipeline
from imgpipe.imageproc.engine import Result, pyvips_version, vips_version
from imgpipe.imageproc.errors import InputMismatch, SigningFailed


@dataclass(frozen=True)
class StepOrigin:
    """What the caller says about the step an output belongs to (all optional)."""

    job_id: str | None = None
    stage: str | None = None
    input_sha256: str | None = None
    filename: str | None = None
    input_verified: bool = False
    """imageproc itself hashed the input to ``input_sha256`` already (``/process-object``
    checks it while streaming): signing need not hash it again."""


def software() -> dict[str, str]:
    return {"imgpipe-imageproc": __version__, "libvips": vips_version(),
            "pyvips": pyvips_version(), "c2pa-python": str(c2pa.__version__),
            "c2pa-rs": c2pa.sdk_version()}


def sign_result(signer: ContentSigner, result: Result, source: bytes, pipeline: Pipeline,
                origin: StepOrigin, overlays: Mapping[str, bytes] | None = None) -> Result:
    """``result`` with its bytes signed; ``payload_sha256`` keeps the unsigned bytes' hash."""
    input_sha256 = (origin.input_sha256 if origin.input_verified and origin.input_sha256
                    else hashlib.sha256(source).hexdigest())
    if origin.input_sha256 and origin.input_sha256 != input_sha256:
        raise InputMismatch(f"the input hashes to sha256 {input_sha256}, "
                            f"not {origin.input_sha256} as the request says")
    step = Step(
        pipeline=pipeline, input_sha256=input_sha256, input_format=result.input.format,
        payload_sha256=result.sha256, job_id=origin.job_id, stage=origin.stage,
        title=origin.filename,
        autorotated=pipeline.autorotate and result.input.orientation not in (0, 1),
        software=software(),
    )
    try:
        signed = signer.sign(result.data, step, source, overlays)
    except c2pa.C2paError as exc:
        raise SigningFailed(f"the output could not be signed: {exc}") from None
    return replace(result, data=signed, payload_sha256=step.payload_sha256)
