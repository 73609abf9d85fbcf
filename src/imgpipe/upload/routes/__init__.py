"""The upload service's routes, one module per resource.

* ``uploads``: ``POST /upload``;
* ``ingest``: ``POST /ingest`` (jobs for objects already in an allowed bucket);
* ``events``: server-sent events, per job and for everything (``/events``);
* ``jobs``: ``/jobs``, ``/jobs/{job_id}``, its outputs and its input;
* ``provenance``: a job's PROV record, lineage by content hash, verification;
* ``graph``: a job's lineage graph for the page;
* ``operator``: queue depths, dead letters and replay (``/status``);
* ``pages``: the page, its static files, presets, pipeline validation, the API description.
"""
