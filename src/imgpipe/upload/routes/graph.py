"""``GET /jobs/{job_id}/graph``: the lineage graph the page draws, as nodes and edges.

Made from the job's records and the lineage of its input (so chained stages
and other jobs over the same content appear: those the asker may see, with
``UPLOAD_VISIBILITY=own``), by :func:`imgpipe.domain.graph.graph_of`.
Each node names its record (``record_url``); the job's own images carry the
URL of their bytes (``image_url``) for thumbnails.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from imgpipe.domain.graph import graph_of, image_node
from imgpipe.domain.lineage import job_records, lineage
from imgpipe.upload.context import context_of, job_id_of, no_such_job

routes = web.RouteTableDef()


def _links(node: dict[str, Any]) -> dict[str, Any]:
    if node["kind"] == "image":
        return node | {"record_url": f"/lineage/{node['sha256']}"}
    return node | {"record_url": f"/jobs/{node['job_id']}/provenance"}


@routes.get("/jobs/{job_id}/graph")
async def get_graph(request: web.Request) -> web.Response:
    """Inputs, steps and outputs of the job and of everything sharing its content."""
    ctx = context_of(request)
    job_id = job_id_of(request)
    store = ctx.backends.provenance
    await ctx.require_visible(request, job_id)
    docs = {str(d.get("_id")): d for d in await job_records(store, job_id)}
    if not docs:
        raise no_such_job(job_id)
    view = await ctx.require_job(request, job_id)
    source = (view.get("input") or {}).get("sha256")
    truncated = False

    async def visible(other: str) -> bool:
        return ctx.may_see(request, await ctx.owner(other))

    if source:
        found = await lineage(store, source,
                              visible=None if ctx.settings.upload_visibility == "all" else visible)
        docs.update(found.records)
        truncated = found.truncated
    graph = graph_of(docs.values())
    nodes = {node_id: _links(node) for node_id, node in graph.nodes.items()}
    if source and image_node(source) in nodes:
        nodes[image_node(source)]["image_url"] = f"/jobs/{job_id}/input"
    for output in view.get("outputs") or []:
        node = nodes.get(image_node(str(output.get("sha256"))))
        if node is not None:
            node["image_url"] = output["url"]
    return web.json_response({"job_id": job_id, "nodes": list(nodes.values()),
                              "edges": graph.edges, "truncated": truncated})
