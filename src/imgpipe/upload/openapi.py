"""The upload service's OpenAPI 3.1 description.

Written out by hand from the handlers, kept beside them; a test checks that
every route the service serves and every refusal reason it raises appears here.
Only routes the running application actually has are listed.
"""

from __future__ import annotations

from typing import Any

from imgpipe import __version__
from imgpipe.upload.openapi_schemas import JOB_ID, ref, schemas
from imgpipe.upload.reasons import ERROR_REASONS


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*reasons: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for reason in (*reasons, "internal_error"):
        by_status.setdefault(ERROR_REASONS[reason][0], []).append(reason)
    return {
        str(status): {**_json(ref("Error"), "Refused; reason one of: " + ", ".join(names)),
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
LAST_EVENT_ID = _param(
    "Last-Event-ID", "header", {"type": "string", "maxLength": 256},
    "The id of the last event received: the stream continues after it.")
UNAVAILABLE = ("storage_unavailable", "provenance_unavailable", "backend_unavailable")


def _paths() -> dict[str, dict[str, Any]]:
    image = {"description": "The image bytes.", "content": {"image/*": {}}}
    html = {"description": "An HTML page.", "content": {"text/html": {}}}
    return {
        "/upload": {"post": _op(
            "Upload images; one job per file", {
                "202": _json(ref("UploadAccepted"), "Accepted: every file is stored and queued."),
                **_errors("expected_multipart", "invalid_form", "unknown_field", "field_too_long",
                          "missing_file", "too_many_files", "too_many_pipelines", "empty_file",
                          "invalid_filename",
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
                "200": _json(ref("JobList"), "The jobs found, in the order asked."),
                **_errors("missing_ids", "too_many_ids", "invalid_job_id", *UNAVAILABLE),
            },
            params=[_param("ids", "query", {"type": "string"},
                           "Comma-separated job ids (or repeated ids=), at most 100.", True)],
        )},
        "/jobs/{job_id}": {"get": _op(
            "A job's status, input and outputs", {
                "200": _json(ref("Job"), "The job."),
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
                                      "Position in the job's `outputs` list, in plain ASCII "
                                      "digits (no sign, no underscores).")],
            description="Headers: `X-Imgpipe-Sha256` (the output's sha256), "
                        "`Content-Disposition` with a file name.",
        )},
        "/jobs/{job_id}/outputs/{index}/credentials": {"get": _op(
            "The output's Content Credentials (C2PA), validated", {
                "200": _json(ref("Credentials"), "Verdict, failures and the chain of "
                                                  "manifests (active first)."),
                **_errors("job_not_found", "output_not_found", "output_missing", *UNAVAILABLE),
            },
            params=[JOB_PARAM, _param("index", "path", {"type": "integer", "minimum": 0},
                                      "Position in the job's `outputs` list.")],
            description="Validates the stored output's manifest store: claim signatures, "
                        "the hash binding of its bytes, and trust of the signer against "
                        "C2PA_TRUST_ANCHORS. `verdict` is `none` for an output made with "
                        "signing off.",
        )},
        "/jobs/{job_id}/provenance": {"get": _op(
            "The job's provenance record (W3C PROV)", {
                "200": {"description": "PROV-JSON with one bundle job:<job_id> holding every "
                                       "stage; PROV-N or PROV-JSON-LD with ?format=.",
                        "content": {"application/json": {}, "text/provenance-notation": {},
                                    "application/ld+json": {}}},
                **_errors("invalid_format", "job_not_found", "provenance_pending", "busy",
                          *UNAVAILABLE),
            },
            params=[JOB_PARAM, FORMAT_QUERY],
            description="Entities (images with sha256, size, format, dimensions, S3 location), "
                        "activities (upload; each step with its canonical pipeline, start and "
                        "end), agents (imgpipe, libvips and pyvips versions, instances).",
            tag="provenance",
        )},
        "/jobs/{job_id}/verify": {"post": _op(
            "Re-run the job's recorded steps and compare hashes", {
                "200": _json(ref("Verification"), "The verification report."),
                **_errors("job_not_found", "provenance_pending", "imageproc_unavailable", "imageproc_timeout",
                          "busy", "rate_limited", "upload_timeout", *UNAVAILABLE),
            },
            params=[JOB_PARAM], tag="provenance",
            description="A verification that re-runs any step through imageproc spends one "
                        "of the principal's UPLOAD_VERIFY_PER_MINUTE; a step whose input, "
                        "pipeline and software versions ran in the last "
                        "UPLOAD_VERIFY_CACHE_SECONDS is answered from memory. Stored objects "
                        "are read and hashed every time.",
        )},
        "/lineage/{sha256}": {"get": _op(
            "What an image was derived from and what was derived from it", {
                "200": {"description": "JSON summary (sha256, ancestors, descendants, entities, "
                                       "steps, uploads, jobs, truncated, prov_url); with "
                                       "?format= the same records as a PROV document.",
                        "content": {"application/json": {}}},
                **_errors("invalid_sha256", "invalid_format", "content_not_found", "busy",
                          *UNAVAILABLE),
            },
            params=[_param("sha256", "path", {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "Content hash of an input or output image."), FORMAT_QUERY],
            tag="provenance",
        )},
        "/jobs/{job_id}/events": {"get": _op(
            "A job's status as it changes (server-sent events)", {
                "200": {"description": "text/event-stream: a 'job' event with the job's whole "
                        "status view now and on every change. Resume with Last-Event-ID.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **_errors("job_not_found", *UNAVAILABLE),
            }, params=[JOB_PARAM, LAST_EVENT_ID], tag="jobs",
        )},
        "/events": {"get": _op(
            "Every provenance record as it is stored (server-sent events)", {
                "200": {"description": "text/event-stream: a 'record' event per record (job_id, "
                        "kind, stage, pipeline, time, output). Resume with Last-Event-ID.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(*UNAVAILABLE),
            }, params=[LAST_EVENT_ID], tag="jobs",
            description="Fed from the provenance store's changes feed; the page and "
                        "'imgpipe submit --wait' follow it, polling /jobs when it fails.",
        )},
        "/jobs/{job_id}/graph": {"get": _op(
            "The job's lineage graph (nodes and edges) for drawing", {
                "200": _json({"type": "object", "properties": {
                    "nodes": {"type": "array", "items": {"type": "object"}},
                    "edges": {"type": "array", "items": {"type": "object"}},
                    "truncated": {"type": "boolean"}}},
                    "Images, uploads and steps of the job and of jobs sharing its content."),
                **_errors("job_not_found", *UNAVAILABLE),
            }, params=[JOB_PARAM], tag="provenance",
        )},
        "/status": {"get": _op(
            "Queue depth and dead letters per stage", {
                "200": _json({"type": "object", "properties": {
                    "stages": {"type": "array", "items": {"type": "object"}},
                    "may_replay": {"type": "boolean"}}},
                    "Each stage's waiting and dead-lettered messages, the oldest dead letters "
                    "with their reasons."),
                **_errors("broker_unavailable", *UNAVAILABLE),
            }, tag="operations",
        )},
        "/dead-letters/{exchange}/replay": {"post": _op(
            "Replay a stage's dead letters (operators only)", {
                "200": _json({"type": "object"}, "The dead letters sent back."),
                **_errors("not_an_operator", "unknown_stage", "invalid_json",
                          "broker_unavailable", *UNAVAILABLE),
            }, params=[_param("exchange", "path", {"type": "string"},
                              "The stage's exchange, as GET /status names it.")],
            body={"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ids": {
                    "type": "array", "items": {"type": "string"},
                    "description": "Only these message or job ids (default: all)."}}}}}},
            tag="operations",
        )},
        "/ingest": {"post": _op(
            "Jobs for images already in an allowed bucket", {
                "200": {"description": "Progress of the run, one JSON object per line; the last "
                        "has done: true, or an error.",
                        "content": {"application/x-ndjson": {"schema": ref("IngestProgress")}}},
                **_errors("invalid_json", "invalid_source", "ingest_bucket_not_allowed",
                          "bucket_not_found", "invalid_pipeline", "unknown_preset",
                          "broker_unavailable", *UNAVAILABLE),
            }, body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["source"], "properties": {
                    "source": {"type": "string", "description": "s3://bucket/prefix"},
                    "pipelines": {"type": "array", "items": {"type": "string"},
                                  "description": "At most UPLOAD_MAX_PIPELINES (default 16)."},
                    "restart": {"type": "boolean", "description":
                                "List from the beginning instead of resuming a stopped run."},
                }}}}},
            tag="jobs",
            description="Reads each object once (sha256, size, format) and queues one job per "
                        "image; its provenance names the object's location. Objects already "
                        "ingested (same key and content) are skipped; a stopped run resumes.",
        )},
        "/presets": {"get": _op(
            "The named pipelines", {"200": _json(ref("Presets"), "Presets by name.")},
            tag="pipelines",
        )},
        "/pipelines/validate": {
            "get": _op(
                "Check a pipeline", {
                    "200": _json(ref("Validation"), "The pipeline is valid."),
                    **_errors("missing_pipeline", "invalid_pipeline", "unknown_preset"),
                }, params=[PIPELINE_QUERY], tag="pipelines",
                description="The page calls this as the user types.",
            ),
            "post": _op(
                "Check a pipeline given as JSON", {
                    "200": _json(ref("Validation"), "The pipeline is valid."),
                    **_errors("invalid_json", "json_too_deep", "request_entity_too_large",
                              "missing_pipeline", "invalid_pipeline", "unknown_preset",
                              "upload_timeout"),
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
        "/favicon.ico": {"get": _op(
            "The page's icon",
            {"200": {"description": "An ICO image.", "content": {"image/x-icon": {}}}},
            tag="pages",
        )},
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
            "200": _json(ref("Ready"), "Ready."),
            "503": _json(ref("Ready"), "Not ready; `checks` names the failing backends."),
        }, tag="ops")},
        "/metrics": {"get": _op("Prometheus metrics", {
            "200": {"description": "Prometheus text format.", "content": {"text/plain": {}}},
        }, tag="ops")},
    }


#: Answered without a token even when UPLOAD_API_TOKENS is set (see upload/auth.py).
PUBLIC = frozenset({"/", "/api", "/openapi.json", "/static/{path}", "/favicon.ico", "/healthz",
                    "/readyz", "/metrics"})


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
        "components": {"schemas": schemas(), "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "Needed only when the service sets UPLOAD_API_TOKENS; "
                           "the page, this description and the ops routes stay public.",
        }}},
        "x-error-reasons": {
            reason: {"status": status, "description": text}
            for reason, (status, text) in ERROR_REASONS.items()
        },
    }
