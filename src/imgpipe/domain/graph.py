"""A provenance record as a graph: images, the activities that used and made them, and edges.

One model for every drawing of a record: ``imgpipe provenance show --format
dot`` writes it as Graphviz, the page draws it as inline SVG. Invariants:
an image is one node per sha256 (the same bytes in two stages or jobs are
one node, which is how chained stages and jobs connect); an activity is one
node per upload or step (job, stage, pipeline, input); every edge joins two
nodes of the graph; node ids are stable for the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imgpipe.domain.events import stable_id
from imgpipe.domain.lineage import images, steps, uploads


@dataclass
class Graph:
    """Nodes (``id``, ``kind`` and what is known of them) and edges (``source``, ``target``,
    ``relation``: ``used`` or ``generated``)."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes.values()), "edges": self.edges}

    def _edge(self, source: str, target: str, relation: str) -> None:
        edge = {"source": source, "target": target, "relation": relation}
        if edge not in self.edges:
            self.edges.append(edge)


def image_node(sha256: str) -> str:
    return f"image:{sha256}"


def graph_of(docs: Iterable[Mapping[str, Any]]) -> Graph:
    """The graph of provenance records ``docs`` (one job's, or a lineage across jobs)."""
    docs = list(docs)
    graph = Graph()
    known = images(docs)

    def image(sha: str) -> str:
        node = image_node(sha)
        if node not in graph.nodes:
            graph.nodes[node] = {"id": node, "kind": "image",
                                 **known.get(sha, {"sha256": sha, "locations": []})}
        return node

    for upload in uploads(docs):
        node = f"upload:{upload['job_id']}"
        graph.nodes[node] = {"id": node, "kind": "upload", **upload}
        if upload.get("sha256"):
            graph._edge(node, image(str(upload["sha256"])), "generated")
    for step in steps(docs):
        key = stable_id(str(step["stage"]), str(step["pipeline"]), str(step["input_sha256"]))
        node = f"step:{step['job_id']}.{key[:12]}"
        graph.nodes[node] = {"id": node, "kind": "step", **step}
        if step.get("input_sha256"):
            graph._edge(image(str(step["input_sha256"])), node, "used")
        if step.get("output_sha256"):
            graph._edge(node, image(str(step["output_sha256"])), "generated")
    return graph


def _quote(text: str) -> str:
    """A Graphviz double-quoted string (``\\n`` stays a line break)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _size(size: Any) -> str:
    if not isinstance(size, int):
        return ""
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB"


def _label(node: Mapping[str, Any]) -> str:
    if node["kind"] == "image":
        dims = f"{node['width']}x{node['height']}" if node.get("width") else ""
        facts = " ".join(p for p in (str(node.get("format") or "").upper(), dims,
                                     _size(node.get("size"))) if p)
        return "\n".join(p for p in (f"sha256:{str(node['sha256'])[:16]}", facts) if p)
    if node["kind"] == "upload":
        return f"upload\n{node.get('filename') or '(no name)'}\njob {str(node['job_id'])[:8]}"
    outcome = "" if node.get("outcome") == "completed" else f"\n{str(node.get('outcome')).upper()}"
    return f"{node.get('stage')}: {node.get('pipeline')}\njob {str(node['job_id'])[:8]}{outcome}"


_STYLE = {
    "image": 'shape=note, style=filled, fillcolor="#fdf6e3"',
    "upload": 'shape=box, style="rounded,filled", fillcolor="#e0ecff"',
    "step": 'shape=box, style="rounded,filled", fillcolor="#e6f4e6"',
}


def to_dot(graph: Graph, title: str) -> str:
    """The graph in the DOT language: images as notes, activities as boxes, left to right.

    Edges point the way the work went (input → step → output), labelled with
    their PROV relation; a failed step is drawn red.
    """
    lines = [f"digraph {_quote(title)} {{",
             "  rankdir=LR;",
             f"  label={_quote(title)}; labelloc=t;",
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for node in graph.nodes.values():
        style = _STYLE[node["kind"]]
        if node["kind"] == "step" and node.get("outcome") == "failed":
            style += ', color="#b00020", fontcolor="#b00020"'
        tooltip = node.get("sha256") or node.get("pipeline") or node.get("filename") or ""
        lines.append(f"  {_quote(node['id'])} [label={_quote(_label(node))}, {style}, "
                     f"tooltip={_quote(str(tooltip))}];")
    for edge in graph.edges:
        lines.append(f"  {_quote(edge['source'])} -> {_quote(edge['target'])} "
                     f"[label={_quote(edge['relation'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
