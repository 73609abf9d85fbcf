"""`imgpipe provenance show --format dot`: the record as a Graphviz graph.

Events are recorded into a real provenance store (each backend set); the
command runs as a user runs it, and its output is parsed by Graphviz's own
``dot`` when it is installed, and checked structurally in any case.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys

import pytest

from imgpipe.broker.protocol import Delivery
from imgpipe.domain.events import ProvenanceEvent, new_id
from imgpipe.domain.graph import graph_of, to_dot
from imgpipe.provenance.recorder import Recorder
from imgpipe.provstore.protocol import ProvenanceStore
from tests.prov_events import chain, received, ref, sha, step

NODE = re.compile(r'^  "((?:[^"\\]|\\.)*)" \[label="(?:[^"\\]|\\.)*", .*\];$')
EDGE = re.compile(r'^  "((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[label="(used|generated)"\];$')


async def _record(store: ProvenanceStore, events: list[ProvenanceEvent]) -> None:
    recorder = Recorder(store)
    for ev in events:
        await recorder.handle(Delivery(body=ev.to_bytes(), message_id=ev.event_id,
                                       redelivered=False))


async def _imgpipe(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imgpipe.cli", *args, env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def structure(text: str) -> tuple[set[str], list[tuple[str, str, str]]]:
    """The node ids and edges of ``to_dot``'s output; fails on any line it does not expect."""
    lines = text.rstrip("\n").splitlines()
    assert lines[0].startswith("digraph \"") and lines[0].endswith("{") and lines[-1] == "}"
    nodes: set[str] = set()
    edges: list[tuple[str, str, str]] = []
    for line in lines[1:-1]:
        if node := NODE.match(line):
            nodes.add(node.group(1))
        elif edge := EDGE.match(line):
            edges.append((edge.group(1), edge.group(2), edge.group(3)))
        else:
            assert re.match(r"^  (rankdir|label|node|edge)\b", line), line
    for source, target, _ in edges:
        assert source in nodes and target in nodes, (source, target)
    return nodes, edges


async def _graphviz_accepts(text: str) -> None:
    if shutil.which("dot") is None:
        return  # structure() has checked it; Graphviz is not installed here
    proc = await asyncio.create_subprocess_exec(
        "dot", "-Tsvg", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    svg, err = await proc.communicate(text.encode())
    assert proc.returncode == 0 and not err, err.decode()
    assert b"<svg" in svg


async def test_show_as_dot_draws_every_image_and_step(
    backend_env: dict[str, str], provenance_store: ProvenanceStore
) -> None:
    job_id, events = chain()
    await _record(provenance_store, events)
    status, out, err = await _imgpipe(backend_env, "provenance", "show", job_id, "--format", "dot")
    assert status == 0, err
    nodes, edges = structure(out)
    original, thumb, dithered = (sha(f"{job_id}-{n}") for n in ("original", "thumb", "dithered"))
    assert {n for n in nodes if n.startswith("image:")} == {
        f"image:{s}" for s in (original, thumb, dithered)}
    assert len([n for n in nodes if n.startswith("step:")]) == 2
    assert (f"upload:{job_id}", f"image:{original}", "generated") in edges
    used = {s for s, _, r in edges if r == "used"}
    assert used == {f"image:{original}", f"image:{thumb}"}
    assert "thumbnailed: resize:w=256,h=256/format:png" in out
    await _graphviz_accepts(out)


async def test_lineage_as_dot_joins_jobs_and_marks_failures(
    backend_env: dict[str, str], provenance_store: ProvenanceStore
) -> None:
    shared = ref("shared-original", bucket="in")
    first, second = new_id(), new_id()
    await _record(provenance_store, [
        received(first, shared), *step(first, "processed", "resize:w=64/format:png", shared,
                                       ref(f"{first}-small")),
        received(second, shared),
        *step(second, "broken", 'text:"quoted" \\ back/format:png', shared, None, failed=True)])
    status, out, err = await _imgpipe(
        backend_env, "provenance", "lineage", shared.sha256, "--format", "dot")
    assert status == 0, err
    nodes, edges = structure(out)
    assert {f"upload:{first}", f"upload:{second}", f"image:{shared.sha256}"} <= nodes
    assert len([e for e in edges if e[0] == f"image:{shared.sha256}"]) == 2
    assert '#b00020' in out  # the failed step is drawn red
    assert '\\"quoted\\" \\\\ back' in out  # quotes and backslashes escaped
    await _graphviz_accepts(out)


@pytest.mark.parametrize("title", ['job "x"', "a\\b", "line\nbreak"])
def test_titles_and_labels_are_quoted(title: str) -> None:
    job_id, events = chain()
    docs = [e.model_dump(mode="json") for e in events]
    nodes, edges = structure(to_dot(graph_of(docs), title))
    assert len(nodes) == 6 and len(edges) == 5


async def test_unknown_job_exits_3(backend_env: dict[str, str]) -> None:
    status, out, err = await _imgpipe(backend_env, "provenance", "show", new_id(),
                                      "--format", "dot")
    assert status == 3 and out == "" and "no provenance" in err
