"""The upload service's OpenAPI 3.1 description.

Written out by hand from the handlers, kept beside them; a test checks that
every route the service serves and every refusal reason it raises appears here.
Only routes the running application actually has are listed.
"""

from __future__ import annotations

from typing import Any

from imgpipe import __version__

JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "32 hexadecimal digits."}

#: Every ``reason`` an HTTP refusal of the upload service can carry: status and meaning.
ERROR_REASONS: dict[str, tuple[int, str]] = {
    "expected_multipart": (415, "The upload was not multipart/form-data (400 when no content type was sent)."),
    "invalid_form": (400, "The multipart body is malformed or holds a nested multipart part."),
    "unknown_field": (400, "A form field other than 'file' or 'pipeline' was sent."),
    "field_too_long": (400, "A 'pipeline' form field is longer than 64 KiB."),
    "missing_file": (400, "The upload holds no 'file' part."),
    "too_many_files": (413, "More files in one upload than UPLOAD_MAX_FILES allows."),
    "empty_file": (400, "A 'file' part is empty."),
    "invalid_filename": (400, "A file name holds a path, control characters or more than 255 characters."),
    "upload_timeout": (408, "The client sent nothing for UPLOAD_READ_TIMEOUT seconds; nothing was kept."),
    "missing_token": (401, "UPLOAD_API_TOKENS is set and the request has no 'Authorization: Bearer' token."),
    "invalid_token": (401, "The bearer token is not one of UPLOAD_API_TOKENS."),
    "unsupported_format": (415, "A file is not JPEG, PNG, GIF, WebP, TIFF, AVIF or HEIF (sniffed from its bytes)."),
    "too_large": (413, "A file is larger than UPLOAD_MAX_BYTES."),
    "invalid_pipeline": (400, "The pipeline does not parse or validate; the message names the step and parameter."),
    "unknown_preset": (400, "A bare name that is neither a preset nor an operation."),
    "missing_pipeline": (400, "/pipelines/validate was called without a pipeline."),
    "invalid_json": (400, "A JSON request body does not parse."),
    "missing_ids": (400, "/jobs was called without ids."),
    "too_many_ids": (400, "More than 100 ids in one /jobs request."),
    "invalid_job_id": (400, "An id given to /jobs is not 32 hexadecimal digits."),
    "job_not_found": (404, "No such job was ever accepted."),
    "output_not_found": (404, "The job has no output with that index (yet)."),
    "output_missing": (410, "The output's record exists but its bytes are no longer stored."),
    "input_not_found": (404, "The job's uploaded image is not (or no longer) stored."),
    "invalid_input": (400, "The request is malformed."),
    "object_not_found": (404, "An object the request needs is not stored."),
    "request_entity_too_large": (413, "A JSON body is larger than 1 MiB."),
    "provenance_pending": (404, "The job is queued: its provenance is not recorded yet (retry shortly)."),
    "invalid_format": (400, "?format= names no known serialisation (json, provn, jsonld)."),
    "invalid_sha256": (400, "The sha256 in the path is not 64 hexadecimal digits."),
    "content_not_found": (404, "No provenance record mentions this sha256."),
    "imageproc_unavailable": (503, "Verification could not reach imageproc; retry later."),
    "imageproc_timeout": (503, "Verification: imageproc did not answer in time; retry later."),
    "not_found": (404, "No such route."),
    "method_not_allowed": (405, "The route exists but not with this method."),
    "storage_unavailable": (503, "S3 is unreachable; retry later."),
    "storage_error": (503, "S3 refused a request of the service (e.g. its credentials); retry later."),
    "broker_unavailable": (503, "RabbitMQ is unreachable; the upload was not queued, retry later."),
    "unroutable": (503, "No queue would receive the job's event (the system is misconfigured); nothing was queued."),
    "broker_refused": (503, "RabbitMQ refused the job's event; the upload was not queued, retry later."),
    "provenance_unavailable": (503, "CouchDB is unreachable; retry later."),
    "provenance_refused": (503, "CouchDB refused to store a provenance record; retry later."),
    "backend_unavailable": (503, "A backend is unreachable; retry later."),
    "internal_error": (500, "An unexpected failure; the service logs it."),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*reasons: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for reason in (*reasons, "internal_error"):
        by_status.setdefault(ERROR_REASONS[reason][0], []).append(reason)
    return {
        str(status): {**_json(_ref("Error"), "Refused; reason one of: " + ", ".join(names)),
                      "x-reasons": names}
        for status, names in sorted(by_status.items())
    }


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, description: str = "", tag: str = "jobs") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


JOB_PARAM = _param("job_id", "path", JOB_ID, "The job's id, from the upload's answer.")
PIPELINE_QUERY = _param(
    "pipeline", "query", {"type": "string"},
    "A preset name (thumbnail) or pipeline text (resize:w=256/format:webp) or JSON steps.",
)
FORMAT_QUERY = _param("format", "query", {"enum": ["json", "provn", "jsonld"]},
                      "PROV-JSON (json), PROV-N (provn) or PROV-JSON-LD (jsonld).")
UNAVAILABLE = ("storage_unavailable", "provenance_unavailable", "backend_unavailable")


def _paths() -> dict[str, dict[str, Any]]:
    image = {"description": "The image bytes.", "content": {"image/*": {}}}
    html = {"description": "An HTML page.", "content": {"text/html": {}}}
    return {
        "/upload": {"post": _op(
            "Upload images; one job per file", {
                "202": _json(_ref("UploadAccepted"), "Accepted: every file is stored and queued."),
                **_errors("expected_multipart", "invalid_form", "unknown_field", "field_too_long",
                          "missing_file", "too_many_files", "empty_file", "invalid_filename",
                          "unsupported_format", "too_large", "upload_timeout", "invalid_pipeline",
                          "unknown_preset", "broker_unavailable", "broker_refused", "unroutable",
                          "storage_error", *UNAVAILABLE),
            },
            params=[PIPELINE_QUERY],
            body={"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "One or more images (repeat the part)."},
                    "pipeline": {"type": "string",
                                 "description": "Pipeline(s) to run; repeatable; default: "
                                                "UPLOAD_DEFAULT_PIPELINE (thumbnail)."},
                }}}}},
            description="Each file is streamed to S3 while its sha256 is computed, then its "
                        "`uploaded` event is confirmed by RabbitMQ before the 202 is sent. "
                        "A refused request leaves nothing stored.",
        )},
        "/jobs": {"get": _op(
            "Several jobs' status at once", {
                "200": _json(_ref("JobList"), "The jobs found, in the order asked."),
                **_errors("missing_ids", "too_many_ids", "invalid_job_id", *UNAVAILABLE),
            },
            params=[_param("ids", "query", {"type": "string"},
                           "Comma-separated job ids (or repeated ids=), at most 100.", True)],
        )},
        "/jobs/{job_id}": {"get": _op(
            "A job's status, input and outputs", {
                "200": _json(_ref("Job"), "The job."),
                **_errors("job_not_found", *UNAVAILABLE),
            }, params=[JOB_PARAM],
            description="Answers `queued` from the moment the upload's 202 is sent.",
        )},
        "/jobs/{job_id}/input": {"get": _op(
            "The uploaded image", {"200": image, **_errors("job_not_found", "input_not_found",
                                                         *UNAVAILABLE)},
            params=[JOB_PARAM],
        )},
        "/jobs/{job_id}/outputs/{index}": {"get": _op(
            "One output image of a job", {
                "200": image,
                **_errors("job_not_found", "output_not_found", "output_missing", *UNAVAILABLE),
            },
            params=[JOB_PARAM, _param("index", "path", {"type": "integer", "minimum": 0},
                                      "Position in the job's `outputs` list.")],
            description="Headers: `X-Imgpipe-Sha256` (the output's sha256), "
                        "`Content-Disposition` with a file name.",
        )},
        "/jobs/{job_id}/provenance": {"get": _op(
            "The job's provenance record (W3C PROV)", {
                "200": {"description": "PROV-JSON with one bundle job:<job_id> holding every "
                                       "stage; PROV-N or PROV-JSON-LD with ?format=.",
                        "content": {"application/json": {}, "text/provenance-notation": {},
                                    "application/ld+json": {}}},
                **_errors("invalid_format", "job_not_found", "provenance_pending", *UNAVAILABLE),
            },
            params=[JOB_PARAM, FORMAT_QUERY],
            description="Entities (images with sha256, size, format, dimensions, S3 location), "
                        "activities (upload; each step with its canonical pipeline, start and "
                        "end), agents (imgpipe, libvips and pyvips versions, instances).",
            tag="provenance",
        )},
        "/jobs/{job_id}/verify": {"post": _op(
            "Re-run the job's recorded steps and compare hashes", {
                "200": _json(_ref("Verification"), "The verification report."),
                **_errors("job_not_found", "provenance_pending", "imageproc_unavailable", "imageproc_timeout",
                          *UNAVAILABLE),
            },
            params=[JOB_PARAM], tag="provenance",
        )},
        "/lineage/{sha256}": {"get": _op(
            "What an image was derived from and what was derived from it", {
                "200": {"description": "JSON summary (sha256, ancestors, descendants, entities, "
                                       "steps, uploads, jobs, truncated, prov_url); with "
                                       "?format= the same records as a PROV document.",
                        "content": {"application/json": {}}},
                **_errors("invalid_sha256", "invalid_format", "content_not_found", *UNAVAILABLE),
            },
            params=[_param("sha256", "path", {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "Content hash of an input or output image."), FORMAT_QUERY],
            tag="provenance",
        )},
        "/presets": {"get": _op(
            "The named pipelines", {"200": _json(_ref("Presets"), "Presets by name.")},
            tag="pipelines",
        )},
        "/pipelines/validate": {
            "get": _op(
                "Check a pipeline", {
                    "200": _json(_ref("Validation"), "The pipeline is valid."),
                    **_errors("missing_pipeline", "invalid_pipeline", "unknown_preset"),
                }, params=[PIPELINE_QUERY], tag="pipelines",
                description="The page calls this as the user types.",
            ),
            "post": _op(
                "Check a pipeline given as JSON", {
                    "200": _json(_ref("Validation"), "The pipeline is valid."),
                    **_errors("invalid_json", "request_entity_too_large", "missing_pipeline", "invalid_pipeline",
                              "unknown_preset"),
                }, tag="pipelines",
                body={"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["pipeline"], "properties": {
                        "pipeline": {"description": "Text, preset name or a list of steps "
                                                    "such as [{\"op\": \"resize\", \"w\": 256}]."},
                    }}}}},
            ),
        },
        "/": {"get": _op("The web page: upload, follow jobs, see results", {"200": html}, tag="pages")},
        "/api": {"get": _op("This description as a readable page", {"200": html}, tag="pages")},
        "/openapi.json": {"get": _op(
            "This description (OpenAPI 3.1)",
            {"200": {"description": "OpenAPI document.", "content": {"application/json": {}}}},
            tag="pages",
        )},
        "/static/{path}": {"get": _op(
            "The page's CSS and JavaScript",
            {"200": {"description": "A static file."}, **_errors("not_found")},
            params=[_param("path", "path", {"type": "string"}, "File name.")], tag="pages",
        )},
        "/healthz": {"get": _op("Liveness", {"200": _json(
            {"type": "object", "properties": {"status": {"const": "alive"}}}, "Alive.")}, tag="ops")},
        "/readyz": {"get": _op("Readiness: are RabbitMQ, S3 and CouchDB reachable?", {
            "200": _json(_ref("Ready"), "Ready."),
            "503": _json(_ref("Ready"), "Not ready; `checks` names the failing backends."),
        }, tag="ops")},
        "/metrics": {"get": _op("Prometheus metrics", {
            "200": {"description": "Prometheus text format.", "content": {"text/plain": {}}},
        }, tag="ops")},
    }


def _schemas() -> dict[str, Any]:
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
            "pipelines": {"type": "array", "items": {"type": "string"}},
            "received_at": {**nullable_str, "format": "date-time"},
            "input": {"type": "object", "properties": {
                "sha256": sha, "size": nullable_int, "media_type": nullable_str,
                "format": nullable_str,
                "location": {**nullable_str, "description": "s3://bucket/key"},
            }},
            "outputs": {"type": "array", "items": _ref("Output")},
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
        }},
        "JobList": {"type": "object", "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "missing": {"type": "array", "items": JOB_ID, "description": "Ids no job has."},
        }},
        "Presets": {"type": "object", "properties": {
            "default": {"type": "string", "description": "Used when an upload names no pipeline."},
            "presets": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "pipeline": {"type": "string", "description": "Canonical pipeline text."},
            }}},
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


#: Answered without a token even when UPLOAD_API_TOKENS is set (see upload/auth.py).
PUBLIC = frozenset({"/", "/api", "/openapi.json", "/static/{path}", "/healthz", "/readyz",
                    "/metrics"})


def _secured(path: str, op: dict[str, Any]) -> dict[str, Any]:
    if path in PUBLIC:
        return {**op, "security": []}
    responses = {**op["responses"], **_errors("missing_token", "invalid_token")}
    responses.pop("500", None)
    responses["500"] = _errors()["500"]
    return {**op, "responses": dict(sorted(responses.items()))}


def openapi_document(routes: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The OpenAPI document; with ``routes`` ({(METHOD, path)}), only those operations."""
    paths: dict[str, dict[str, Any]] = {}
    for path, ops in _paths().items():
        kept = {m: _secured(path, op) for m, op in ops.items()
                if routes is None or (m.upper(), path) in routes}
        if kept:
            paths[path] = kept
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "imgpipe upload service",
            "version": __version__,
            "description": "Upload images, follow their jobs, fetch outputs and provenance. "
                           "Every refusal is JSON: {\"error\": {\"reason\", \"message\"}}.",
        },
        "paths": paths,
        "security": [{}, {"bearer": []}],
        "components": {"schemas": _schemas(), "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "Needed only when the service sets UPLOAD_API_TOKENS; "
                           "the page, this description and the ops routes stay public.",
        }}},
        "x-error-reasons": {
            reason: {"status": status, "description": text}
            for reason, (status, text) in ERROR_REASONS.items()
        },
    }
