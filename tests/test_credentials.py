"""Content Credentials: signing every output format, validation, trust, chains."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from imgpipe.credentials.chain import ensure_chain, make_chain
from imgpipe.credentials.embedded import may_carry_credentials
from imgpipe.credentials.manifest import Step, actions
from imgpipe.credentials.reading import inspect
from imgpipe.credentials.signing import signer_from
from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.errors import ConfigError
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.runtime.config import load
from tests.credentials_kit import chain_in, flip_in_payload, second_reader, signed, signer_for
from tests.images import image_bytes

FORMATS = ("jpeg", "png", "webp", "avif", "tiff", "gif")
PIPELINE = "resize:w=120/rotate:90/blur:1/grayscale/format:{fmt}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return chain_in(tmp_path_factory.mktemp("chain"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_output_format_signs_and_validates(chain, fmt: str) -> None:  # type: ignore[no-untyped-def]
    source = image_bytes(300, 200)
    payload, out = signed(signer_for(chain), source, PIPELINE.format(fmt=fmt),
                          job_id="a" * 32, stage="thumbs")
    assert out != payload and len(out) > len(payload)
    assert may_carry_credentials(out) and not may_carry_credentials(payload)

    trusted = inspect(out, None, chain.ca.read_text())
    assert (trusted.verdict, trusted.state, trusted.failures) == ("trusted", "Trusted", [])
    manifest = trusted.active
    assert manifest is not None and manifest.signer == "imgpipe DEVELOPMENT signer"
    assert [a["action"] for a in manifest.actions] == [
        "c2pa.opened", "c2pa.resized", "c2pa.orientation", "c2pa.filtered",
        "c2pa.color_adjustments", "c2pa.transcoded"]
    parent = manifest.ingredients[0]
    assert parent["relationship"] == "parentOf"
    assert parent["instance_id"] == "sha256:" + hashlib.sha256(source).hexdigest()
    step = manifest.imgpipe or {}
    assert step["job_id"] == "a" * 32 and step["stage"] == "thumbs"
    assert step["pipeline"] == parse_pipeline(PIPELINE.format(fmt=fmt)).canonical()
    assert step["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert step["record"] == {"bundle": f"urn:imgpipe:job:{'a' * 32}"}

    untrusted = inspect(out)
    assert (untrusted.verdict, untrusted.state) == ("untrusted", "Valid")
    assert [f["code"] for f in untrusted.failures] == ["signingCredential.untrusted"]

    tampered = inspect(flip_in_payload(payload, out), None, chain.ca.read_text())
    assert tampered.verdict == "invalid"
    assert any(f["code"].endswith("Hash.mismatch") for f in tampered.failures), tampered.failures


def test_a_second_reader_validates_what_it_can_read(chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """c2pa-ts (TypeScript, not c2pa-rs) reads JPEG, PNG and AVIF (HEIF); not WebP, TIFF, GIF."""
    paths = []
    for fmt in ("jpeg", "png", "avif"):
        payload, out = signed(signer_for(chain), image_bytes(200, 150), f"resize:w=80/format:{fmt}")
        (tmp_path / f"good.{fmt}").write_bytes(out)
        (tmp_path / f"bad.{fmt}").write_bytes(flip_in_payload(payload, out))
        paths += [tmp_path / f"good.{fmt}", tmp_path / f"bad.{fmt}"]
    found = {Path(r["file"]).name: r for r in second_reader(paths)}
    for fmt in ("jpeg", "png", "avif"):
        good, bad = found[f"good.{fmt}"], found[f"bad.{fmt}"]
        assert good["valid"] is True and good["manifests"] == 1, good
        assert bad["valid"] is False, bad
        assert any(c.endswith("Hash.mismatch") for c in bad["codes"]), bad


def test_credentials_of_the_input_stay_as_the_parent_manifest(chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A two-stage chain, and an input signed elsewhere (another signer) first."""
    camera = signer_for(chain_in(tmp_path / "camera", kind="es256", purpose="camera"), alg="es256")
    _, original = signed(camera, image_bytes(400, 300), "format:jpeg")
    signer = signer_for(chain)
    _, first = signed(signer, original, "resize:w=200/format:png", job_id="b" * 32, stage="one")
    _, second = signed(signer, first, "crop:w=100,h=100/format:webp", input_format="png",
                       job_id="b" * 32, stage="two")
    anchors = chain.ca.read_text() + (tmp_path / "camera" / "ca.pem").read_text()
    found = inspect(second, None, anchors)
    assert found.verdict == "trusted", found.failures
    assert [m.title for m in found.chain] == ["two.webp", "one.png", "output.jpeg"]
    assert [m.signer for m in found.chain] == [
        "imgpipe DEVELOPMENT signer", "imgpipe DEVELOPMENT signer", "imgpipe CAMERA signer"]
    assert found.chain[0].ingredients[0]["instance_id"] == (
        "sha256:" + hashlib.sha256(first).hexdigest())
    assert [a["action"] for a in found.chain[0].actions][1] == "c2pa.cropped"
    # the verdict is the active manifest's; a parent's validation was recorded when it was read
    assert inspect(second, None, chain.ca.read_text()).verdict == "trusted"


def test_an_input_whose_credentials_do_not_parse_is_still_a_bound_parent(chain) -> None:  # type: ignore[no-untyped-def]
    source = image_bytes(200, 100, ".png")
    payload, out = signed(signer_for(chain), source, "format:jpeg", input_format="gif")
    found = inspect(out, None, chain.ca.read_text())
    assert found.verdict == "trusted"
    assert found.chain[0].ingredients[0]["instance_id"] == (
        "sha256:" + hashlib.sha256(source).hexdigest())


def test_signing_from_many_threads(chain) -> None:  # type: ignore[no-untyped-def]
    signer = signer_for(chain)
    source = image_bytes(120, 80)
    outputs: list[bytes] = []

    def work() -> None:
        for _ in range(3):
            outputs.append(signed(signer, source, "resize:w=60/format:png")[1])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outputs) == 12
    assert {inspect(o, None, chain.ca.read_text()).verdict for o in outputs} == {"trusted"}


def test_actions_follow_the_pipeline() -> None:
    pipeline = parse_pipeline("crop:w=10,h=10/flip/pad:top=5/sharpen/watermark:hi/dither/format:gif")
    step = Step(pipeline=pipeline, input_sha256="0" * 64, input_format="png",
                payload_sha256="1" * 64, autorotated=True)
    assert [(a["action"], a.get("description")) for a in actions(step)] == [
        ("c2pa.opened", None),
        ("c2pa.orientation", "autorotate (EXIF orientation applied)"),
        ("c2pa.cropped", "crop:w=10,h=10"),
        ("c2pa.orientation", "flip"),
        ("c2pa.resized", "pad:top=5"),
        ("c2pa.filtered", "sharpen"),
        ("c2pa.edited", "watermark:hi"),
        ("c2pa.color_adjustments", "dither"),
        ("c2pa.transcoded", "format:gif"),
    ]


def test_settings_need_a_chain_and_one_key_when_signing_is_on(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="C2PA_CERT_CHAIN"):
        load(ImageprocSettings, c2pa_sign="on")
    files = ensure_chain(tmp_path)
    with pytest.raises(ConfigError, match="C2PA_PRIVATE_KEY or C2PA_SIGNER_CALLBACK"):
        load(ImageprocSettings, c2pa_sign="on", c2pa_cert_chain=files.chain)
    with pytest.raises(ConfigError, match="C2PA_ALG"):
        load(ImageprocSettings, c2pa_alg="md5")
    assert signer_from(load(ImageprocSettings)) is None
    wrong = load(ImageprocSettings, c2pa_sign="on", c2pa_cert_chain=files.chain,
                 c2pa_private_key=files.chain)
    with pytest.raises(ConfigError, match="C2PA"):
        signer_from(wrong)
    good = signer_from(load(ImageprocSettings, c2pa_sign="on", c2pa_cert_chain=files.chain,
                            c2pa_private_key=files.key))
    assert good is not None and ensure_chain(tmp_path) == files  # kept, not made again


@pytest.mark.parametrize(("alg", "callback"), [("ed25519", "sign"), ("es256", "sign_es256")])
def test_a_callback_signs_for_a_key_kept_elsewhere(tmp_path: Path, alg: str, callback: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """C2PA_SIGNER_CALLBACK: a KMS or HSM signs; imgpipe never holds the key."""
    files = make_chain(tmp_path, kind=alg)  # type: ignore[arg-type]
    monkeypatch.setenv("IMGPIPE_TEST_SIGNING_KEY", str(files.key))
    settings = load(ImageprocSettings, c2pa_sign="on", c2pa_cert_chain=files.chain,
                    c2pa_alg=alg, c2pa_signer_callback=f"tests.key_service:{callback}")
    signer = signer_from(settings)
    assert signer is not None
    _, out = signed(signer, image_bytes(100, 80), "format:png")
    assert inspect(out, None, files.ca.read_text()).verdict == "trusted"


def test_a_file_without_credentials_reads_none() -> None:
    assert inspect(image_bytes(50, 50)).verdict == "none"
    assert inspect(image_bytes(50, 50, ".png"), "image/png").verdict == "none"
    assert inspect(b"plain text, no image").verdict == "none"
    broken = inspect(b"\xff\xd8\xff\xe0 not really a JPEG")
    assert broken.verdict == "invalid" and broken.error


def test_a_watermark_image_is_a_placed_component(chain) -> None:  # type: ignore[no-untyped-def]
    from imgpipe.imageproc.engine import process

    logo = image_bytes(40, 20, ".png")
    source = image_bytes(200, 150)
    pipeline = parse_pipeline("watermark:image=logo/format:jpeg")
    result = process(source, pipeline, overlays={"logo": logo})
    step = Step(pipeline=pipeline, input_sha256=hashlib.sha256(source).hexdigest(),
                input_format="jpeg", payload_sha256=result.sha256)
    out = signer_for(chain).sign(result.data, step, source, {"logo": logo})
    found = inspect(out, None, chain.ca.read_text())
    assert found.verdict == "trusted", found.failures
    manifest = found.chain[0]
    assert [a["action"] for a in manifest.actions] == [
        "c2pa.opened", "c2pa.placed", "c2pa.transcoded"]
    assert [(i["relationship"], i["title"], i["instance_id"]) for i in manifest.ingredients] == [
        ("parentOf", "input.jpeg", "sha256:" + hashlib.sha256(source).hexdigest()),
        ("componentOf", "logo", "sha256:" + hashlib.sha256(logo).hexdigest()),
    ]


async def test_credentials_are_checked_against_the_record(chain) -> None:  # type: ignore[no-untyped-def]
    from imgpipe.credentials.agreement import RecordCheck

    source = image_bytes(200, 100)
    payload, out = signed(signer_for(chain), source, "resize:w=50/format:png",
                          job_id="e" * 32, stage="thumbs")
    doc = {"job_id": "e" * 32, "stage": "thumbs", "pipeline": "resize:w=50/format:png",
           "input": {"sha256": hashlib.sha256(source).hexdigest()},
           "output": {"sha256": hashlib.sha256(out).hexdigest(), "media_type": "image/png",
                      "payload_sha256": hashlib.sha256(payload).hexdigest()}}
    check = RecordCheck(chain.ca.read_text())
    agrees = await check(out, doc)
    assert (agrees["agrees"], agrees["verdict"], agrees["differences"]) == (True, "trusted", [])
    other = await check(out, {**doc, "stage": "elsewhere", "pipeline": "format:png"})
    assert other["agrees"] is False
    assert [d.split(":")[0] for d in other["differences"]] == ["stage", "pipeline"]
    tampered = await check(flip_in_payload(payload, out), doc)
    assert tampered["agrees"] is False and tampered["verdict"] == "invalid"
    unsigned = await RecordCheck()(payload, doc)
    assert unsigned["agrees"] is False and unsigned["verdict"] == "none"


def test_imgpipe_dev_signs_unless_told_not_to(tmp_path: Path) -> None:
    from imgpipe.commands.dev import DEV_CREDENTIALS, DevSettings

    signing = DevSettings.build(data_dir=tmp_path / "a")
    chain_dir = (tmp_path / "a" / DEV_CREDENTIALS).resolve()
    assert signing.imageproc.c2pa_sign is True
    assert signing.imageproc.c2pa_cert_chain == chain_dir / "chain.pem"
    assert signing.upload.c2pa_trust_anchors == chain_dir / "ca.pem"
    first = (chain_dir / "ca.pem").read_bytes()
    DevSettings.build(data_dir=tmp_path / "a")
    assert (chain_dir / "ca.pem").read_bytes() == first  # made once, kept
    off = DevSettings.build(data_dir=tmp_path / "b", c2pa_sign="off")
    assert off.imageproc.c2pa_sign is False and off.upload.c2pa_trust_anchors is None
    assert not (tmp_path / "b" / DEV_CREDENTIALS).exists()
