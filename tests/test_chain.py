"""Two chained stages: a second runner takes the first stage's outputs.

``upload → runner (thumbnail) → <name>.processed → runner (dither) → <name>.dithered``;
the lineage of the upload reaches the final output in one query, and the
job's record and verification cover both stages.
"""

from __future__ import annotations

from typing import Any

from prov.model import ProvDocument

from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.testing.processes import ServiceProcesses
from tests.images import image_bytes
from tests.prov_system import call, imgpipe, submit, verify, wait_done


async def start_second_stage(system: ServiceProcesses) -> str:
    """A runner subscribed to the first stage's publish exchange; its stage name."""
    stage = f"{system.name}.dithered"
    system.start("runner", key="runner2", AMQP_EXCHANGE_SUBSCRIBE=system.env["AMQP_EXCHANGE_PUBLISH"],
                 AMQP_EXCHANGE_PUBLISH=stage, RUNNER_PIPELINE="dither")
    await system.wait_ready("runner2")
    return stage


async def test_two_stage_chain_has_lineage_from_upload_to_final_output(system: ServiceProcesses) -> None:
    second = await start_second_stage(system)
    first = system.env["AMQP_EXCHANGE_PUBLISH"]
    job_id = await submit(system, image_bytes(900, 600, ".jpg"), "thumbnail", name="chain.jpg")
    view = await wait_done(system, job_id, outputs=2)
    outputs = {o["stage"]: o for o in view["outputs"]}
    assert set(outputs) == {first, second}
    assert outputs[first]["pipeline"] == parse_pipeline("thumbnail").canonical()
    assert outputs[second]["pipeline"] == parse_pipeline("dither").canonical()
    original, thumb, final = (view["input"]["sha256"], outputs[first]["sha256"],
                              outputs[second]["sha256"])

    status, lineage = await call(system, "GET", f"/lineage/{original}")
    assert status == 200
    assert lineage["descendants"] == [thumb, final]
    assert [(s["stage"], s["input_sha256"], s["output_sha256"]) for s in lineage["steps"]] == [
        (first, original, thumb), (second, thumb, final)]
    assert [u["job_id"] for u in lineage["uploads"]] == [job_id]
    status, lineage = await call(system, "GET", f"/lineage/{final}")
    assert lineage["ancestors"] == [thumb, original] and lineage["descendants"] == []

    status, text = await call(system, "GET", f"/jobs/{job_id}/provenance", format="provn")
    assert status == 200
    document = ProvDocument.deserialize(content=text, format="provn", profile="strict")
    [bundle] = document.bundles
    derivations = {(next(iter(r.get_attribute("prov:generatedEntity"))).localpart,
                    next(iter(r.get_attribute("prov:usedEntity"))).localpart)
                   for r in bundle.get_records() if r.get_type().localpart == "Derivation"}
    assert derivations == {(thumb, original), (final, thumb)}
    software = {next(iter(r.get_attribute("imgpipe:software"))) for r in bundle.get_records()
                if r.get_type().localpart == "Agent" and r.get_attribute("imgpipe:software")}
    assert software == {"imgpipe-upload", "imgpipe-runner", "imgpipe-imageproc", "libvips", "pyvips"}

    report = await verify(system, job_id)
    assert report["outcome"] == "verified", report
    assert sorted(s["stage"] for s in report["steps"]) == sorted([first, second])

    status, out, err = await imgpipe(system, "provenance", "show", job_id)
    assert status == 0, err
    tree = out.splitlines()
    depth: dict[str, Any] = {
        sha: next(len(line) - len(line.lstrip(" │├└─")) for line in tree if sha[:12] in line)
        for sha in (original, thumb, final)}
    assert depth[original] < depth[thumb] < depth[final]


async def test_chained_stage_after_several_pipelines_keeps_every_step(system: ServiceProcesses) -> None:
    """The second stage runs one pipeline over each of the first stage's outputs of a job:
    each run is its own step (own output key, own records), and each verifies."""
    second = await start_second_stage(system)
    presets = ("thumbnail", "lossless", "avatar")
    job_id = await submit(system, image_bytes(640, 480, ".png"), *presets)
    view = await wait_done(system, job_id, outputs=2 * len(presets))
    dithered = [o for o in view["outputs"] if o["stage"] == second]
    assert len(dithered) == len(presets)
    assert len({o["location"] for o in dithered}) == len(presets)

    status, lineage = await call(system, "GET", f"/lineage/{view['input']['sha256']}")
    assert status == 200 and len(lineage["descendants"]) == 2 * len(presets)
    assert len([s for s in lineage["steps"] if s["stage"] == second]) == len(presets)

    report = await verify(system, job_id)
    assert report["outcome"] == "verified", report
    assert len(report["steps"]) == 2 * len(presets)
