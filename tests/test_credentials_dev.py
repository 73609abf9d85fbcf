"""`imgpipe dev` signs out of the box: credentials per output, verify by job and by file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp

from imgpipe.commands.dev import DEV_CREDENTIALS
from imgpipe.testing.processes import DevProcess
from tests.images import image_bytes
from tests.prov_system import call, imgpipe, submit, verify, wait_done
from tests.test_dev import shared_system  # noqa: F401, F811 - the dev system, both backend sets


async def _fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def test_outputs_carry_credentials_that_agree_with_the_record(
        shared_system: DevProcess, tmp_path: Path) -> None:  # noqa: F811
    system = shared_system
    source = image_bytes(233, 177, ".png")
    job_id = await submit(system, source, "resize:w=64/format:webp", "grayscale/format:jpeg",
                          name="fox.png")
    view = await wait_done(system, job_id, outputs=2)
    for n, output in enumerate(view["outputs"]):
        assert output["credentials_url"] == f"/jobs/{job_id}/outputs/{n}/credentials"
        assert output["payload_sha256"] != output["sha256"]
        status, found = await call(system, "GET", output["credentials_url"])
        assert status == 200, found
        assert found["verdict"] == "trusted" and found["anchors"] is True, found
        manifest = found["manifests"][0]
        assert "DEVELOPMENT" in manifest["signer"]
        assert manifest["imgpipe"]["job_id"] == job_id
        assert manifest["imgpipe"]["pipeline"] == output["pipeline"]
        assert manifest["ingredients"][0]["title"] == "fox.png"
        assert manifest["ingredients"][0]["instance_id"] == (
            "sha256:" + hashlib.sha256(source).hexdigest())
    status, missing = await call(system, "GET", f"/jobs/{job_id}/outputs/7/credentials")
    assert status == 404 and missing["error"]["reason"] == "output_not_found"

    report = await verify(system, job_id)
    assert report["outcome"] == "verified", report
    for step in report["steps"]:
        assert step["credentials"]["agrees"] is True, step
        assert step["output"]["rerun_sha256"] == step["output"]["recorded_payload_sha256"]

    data = await _fetch(system.upload_url + view["outputs"][0]["url"])
    out = tmp_path / "out.webp"
    out.write_bytes(data)
    anchors = system.data_dir / DEV_CREDENTIALS / "ca.pem"
    status, text, err = await imgpipe(system, "verify", "--file", str(out), "--anchors",
                                      str(anchors))
    assert status == 0, err
    assert f"{out}: trusted" in text and "c2pa.resized resize:w=64" in text
    status, text, _ = await imgpipe(system, "verify", "--file", str(out))
    assert status == 1 and "NOT trusted" in text and "signingCredential.untrusted" in text
    changed = bytearray(data)
    changed[len(changed) - 20] ^= 0x01  # inside the image data, past the manifest
    (tmp_path / "changed.webp").write_bytes(bytes(changed))
    status, text, _ = await imgpipe(system, "verify", "--file", str(tmp_path / "changed.webp"),
                                    "--anchors", str(anchors))
    assert status == 1 and "INVALID" in text
    status, _, err = await imgpipe(system, "verify", job_id, "--file", str(out))
    assert status == 2 and "not both" in err


async def test_credentials_init_makes_a_trial_chain(shared_system: DevProcess,  # noqa: F811
                                                    tmp_path: Path) -> None:
    status, text, err = await imgpipe(shared_system, "credentials", "init", str(tmp_path / "k"))
    assert status == 0, err
    assert "C2PA_CERT_CHAIN=" in text and "not for production" in text
    assert (tmp_path / "k" / "signer-key.pem").stat().st_mode & 0o077 == 0
    status, _, err = await imgpipe(shared_system, "credentials", "init", str(tmp_path / "k"))
    assert status == 2 and "already holds" in err
