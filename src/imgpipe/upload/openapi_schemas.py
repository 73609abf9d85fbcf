"""The data shapes of the upload service's OpenAPI document (``components.schemas``).

``openapi.py`` describes the operations and refers to these by name (:func:`ref`).
"""

from __future__ import annotations

from typing import Any

from imgpipe.upload.reasons import ERROR_REASONS

JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "32 hexadecimal digits."}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schemas() -> dict[str, Any]:
    """The ``components.schemas`` of the upload service's OpenAPI document."""
    nullable_int = {"type": ["integer", "null"]}
    nullable_str = {"type": ["string", "null"]}
    sha = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$", "description": "sha256 of the bytes."}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["reason", "message"], "properties": {
                "reason": {"type": "string", "enum": sorted(ERROR_REASONS),
                           "description": "Stable code for programs."},
                "message": {"type": "string", "description": "A sentence for people."},
                "details": {"type": "object", "description": "Extra facts, e.g. the pipeline "
                                                             "step and parameter at fault."},
            }}}},
        "UploadAccepted": {"type": "object", "required": ["jobs"], "properties": {"jobs": {
            "type": "array", "items": {"type": "object", "properties": {
                "job_id": JOB_ID,
                "status": {"const": "queued"},
                "status_url": {"type": "string", "description": "/jobs/{job_id}"},
                "filename": {**nullable_str, "description": "The client's file name, path removed."},
                "sha256": sha, "size": {"type": "integer", "description": "Bytes."},
                "format": {"type": "string", "description": "jpeg, png, gif, webp, tiff, avif or heif."},
                "pipelines": {"type": "array", "items": {"type": "string"},
                              "description": "Canonical pipelines the job runs."},
            }}}}},
        "Job": {"type": "object", "required": ["job_id", "status", "outputs"], "properties": {
            "job_id": JOB_ID,
            "status": {"enum": ["queued", "processing", "done", "failed"],
                       "description": "queued: stored and waiting; processing: a runner started; "
                                      "done: every pipeline has an output; failed: see `error`."},
            "filename": nullable_str,
            "owner": {**nullable_str, "description": "The principal (API token name) that "
                                                     "uploaded it; null without tokens."},
            "pipelines": {"type": "array", "items": {"type": "string"}},
            "received_at": {**nullable_str, "format": "date-time"},
            "input": {"type": "object", "properties": {
                "sha256": sha, "size": nullable_int, "media_type": nullable_str,
                "format": nullable_str,
                "location": {**nullable_str, "description": "s3://bucket/key"},
            }},
            "outputs": {"type": "array", "items": ref("Output")},
            "provenance_url": {"type": "string", "description": "/jobs/{job_id}/provenance"},
            "error": {"type": "object", "description": "Present when status is failed.",
                      "properties": {
                          "reason": {"type": "string", "description": "e.g. input_missing, "
                                     "input_changed, invalid_pipeline, or imageproc's reason "
                                     "such as unsupported_image."},
                          "message": {"type": "string"}, "stage": nullable_str,
                          "pipeline": nullable_str}},
        }},
        "Output": {"type": "object", "properties": {
            "stage": {"type": "string", "description": "The runner stage that made it."},
            "pipeline": {"type": "string", "description": "Canonical pipeline."},
            "format": nullable_str, "media_type": nullable_str,
            "width": nullable_int, "height": nullable_int, "size": nullable_int, "sha256": sha,
            "location": {"type": "string", "description": "s3://bucket/key"},
            "url": {"type": "string", "description": "/jobs/{job_id}/outputs/{index}"},
            "completed_at": {**nullable_str, "format": "date-time"},
            "payload_sha256": {**sha, "description": "Signed outputs only: the sha256 of the "
                               "image as libvips encoded it, before the manifest was inserted."},
            "credentials_url": {"type": "string", "description": "Signed outputs only: "
                                "/jobs/{job_id}/outputs/{index}/credentials"},
        }},
        "Credentials": {"type": "object", "required": ["verdict", "manifests"], "properties": {
            "job_id": JOB_ID, "output": {"type": "integer"}, "sha256": sha,
            "anchors": {"type": "boolean", "description": "C2PA_TRUST_ANCHORS is set."},
            "verdict": {"enum": ["trusted", "untrusted", "invalid", "none"], "description":
                        "trusted: valid and the signer chains to an anchor; untrusted: valid "
                        "signature and binding, signer not anchored; invalid: a signature or "
                        "hash failed; none: no credentials."},
            "state": {**nullable_str, "description": "C2PA validation state: Trusted, Valid, "
                      "Invalid."},
            "error": nullable_str,
            "failures": {"type": "array", "items": {"type": "object", "properties": {
                "code": {"type": "string"}, "url": {"type": "string"},
                "explanation": {"type": "string"}}}},
            "manifests": {"type": "array", "items": {"type": "object", "properties": {
                "label": {"type": "string"}, "title": nullable_str, "signer": nullable_str,
                "issuer": nullable_str, "algorithm": nullable_str, "signed_at": nullable_str,
                "generator": {"type": "array", "items": {"type": "string"}},
                "actions": {"type": "array", "items": {"type": "object", "properties": {
                    "action": {"type": "string"}, "description": nullable_str,
                    "agent": nullable_str}}},
                "ingredients": {"type": "array", "items": {"type": "object", "properties": {
                    "title": nullable_str, "format": nullable_str,
                    "relationship": nullable_str, "instance_id": nullable_str,
                    "manifest": nullable_str}}},
                "imgpipe": {"type": ["object", "null"], "description": "The org.imgpipe.step "
                            "assertion: job, stage, pipeline, input and payload sha256, "
                            "software, record."},
            }}},
        }},
        "JobList": {"type": "object", "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
            "missing": {"type": "array", "items": JOB_ID, "description": "Ids no job has."},
        }},
        "Presets": {"type": "object", "properties": {
            "default": {"type": "string", "description": "Used when an upload names no pipeline."},
            "presets": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "pipeline": {"type": "string", "description": "Canonical pipeline text."},
                "description": {"type": "string", "description": "What the preset is for."},
                "builtin": {"type": "boolean",
                            "description": "False for a preset of the IMGPIPE_PRESETS file."},
            }}},
        }},
        "IngestProgress": {"type": "object", "properties": {
            "source": {"type": "string"},
            **{name: {"type": "integer", "minimum": 0} for name in (
                "listed", "queued", "skipped", "refused", "failed", "bytes_read")},
            "elapsed": {"type": "number"},
            "resumed_after": {"type": "string"}, "cursor": {"type": "string"},
            "done": {"type": "boolean"},
            "errors": {"type": "array", "items": {"type": "object"}},
        }},
        "Validation": {"type": "object", "properties": {
            "valid": {"const": True},
            "canonical": {"type": "string", "description": "The canonical text form."},
            "steps": {"type": "array", "items": {"type": "object"},
                      "description": "The JSON form: one {\"op\": name, ...} per step."},
            "format": {"type": "string", "description": "Output format."},
            "media_type": {"type": "string"},
            "preset": {**nullable_str, "description": "The preset name, when one was given."},
        }},
        "Verification": {"type": "object", "properties": {
            "job_id": JOB_ID,
            "outcome": {"enum": ["verified", "input_changed", "output_changed", "output_differs",
                                 "record_incomplete"],
                        "description": "The job's outcome: the most severe of its steps'."},
            "verified": {"type": "boolean"},
            "checked_at": {"type": "string", "format": "date-time"},
            "steps": {"type": "array", "items": {"type": "object", "properties": {
                "stage": {"type": "string"}, "pipeline": {"type": "string"},
                "outcome": {"type": "string"}, "message": {"type": "string"},
                "input": {"type": "object"}, "output": {"type": "object"},
                "libvips": {"type": "object", "description": "Recorded and current versions."},
            }}},
        }},
        "Ready": {"type": "object", "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        }},
    }
