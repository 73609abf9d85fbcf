"""Two chained stages with signing on: the final output carries both stages' manifests."""

from __future__ import annotations

from pathlib import Path

from imgpipe.credentials.chain import make_chain
from imgpipe.testing.processes import ServiceProcesses
from tests.images import image_bytes
from tests.prov_system import call, submit, verify, wait_done
from tests.test_chain import start_second_stage


async def test_a_chain_of_stages_is_a_chain_of_manifests(system_env: ServiceProcesses,
                                                         tmp_path: Path) -> None:
    files = make_chain(tmp_path / "chain", purpose="trial")
    system = system_env
    system.env.update(C2PA_SIGN="on", C2PA_CERT_CHAIN=str(files.chain),
                      C2PA_PRIVATE_KEY=str(files.key), C2PA_TRUST_ANCHORS=str(files.ca))
    await system.start_all()
    second = await start_second_stage(system)
    first = system.env["AMQP_EXCHANGE_PUBLISH"]
    job_id = await submit(system, image_bytes(600, 400, ".jpg"), "thumbnail", name="two.jpg")
    view = await wait_done(system, job_id, outputs=2)
    outputs = {o["stage"]: (n, o) for n, o in enumerate(view["outputs"])}
    _, final = outputs[second]
    status, found = await call(system, "GET", final["credentials_url"])
    assert status == 200 and found["verdict"] == "trusted", found
    manifests = found["manifests"]
    assert [m["imgpipe"]["stage"] for m in manifests] == [second, first]
    assert [m["imgpipe"]["job_id"] for m in manifests] == [job_id, job_id]
    # each manifest's parent is the previous stage's output (or the upload), by sha256
    assert manifests[0]["ingredients"][0]["instance_id"] == f"sha256:{outputs[first][1]['sha256']}"
    assert manifests[1]["ingredients"][0]["instance_id"] == f"sha256:{view['input']['sha256']}"
    assert manifests[0]["actions"][1]["action"] == "c2pa.color_adjustments"  # dither

    report = await verify(system, job_id)
    assert report["outcome"] == "verified", report
    assert [s["credentials"]["agrees"] for s in report["steps"]] == [True, True]
