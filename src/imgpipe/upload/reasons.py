"""Every refusal reason of the upload service, with its HTTP status and meaning.

The OpenAPI document (``openapi.py``) and the API page list these; a test
checks that every reason the service can raise is here.
"""

from __future__ import annotations

#: Every ``reason`` an HTTP refusal of the upload service can carry: status and meaning.
ERROR_REASONS: dict[str, tuple[int, str]] = {
    "expected_multipart": (415, "The upload was not multipart/form-data (400 when no content type was sent)."),
    "invalid_form": (400, "The multipart body is malformed or holds a nested multipart part."),
    "unknown_field": (400, "A form field other than 'file' or 'pipeline' was sent."),
    "field_too_long": (400, "A 'pipeline' form field is longer than 64 KiB."),
    "missing_file": (400, "The upload holds no 'file' part."),
    "too_many_files": (413, "More files in one upload than UPLOAD_MAX_FILES allows."),
    "too_many_pipelines": (413, "More 'pipeline' fields and parameters in one upload than UPLOAD_MAX_PIPELINES allows."),
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
    "json_too_deep": (400, "A JSON request body is nested too deeply to read (a pipeline is a list of steps)."),
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
