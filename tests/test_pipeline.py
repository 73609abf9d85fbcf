"""The pipeline language: parsing, validation errors, canonical form, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgpipe.domain.pipeline import (
    DEFAULT_PIPELINE,
    PipelineError,
    catalogue,
    load_presets,
    parse_pipeline,
)
from imgpipe.errors import ConfigError, InvalidInput


@pytest.mark.parametrize(
    "spec",
    [
        "resize:w=800,h=600,fit=cover/sharpen/format:webp,q=80",
        "resize:w=256/format:jpeg",
        "dither",
    ],
)
def test_issue_examples_parse(spec: str) -> None:
    pipeline = parse_pipeline(spec)
    assert parse_pipeline(pipeline.canonical()) == pipeline


def test_text_and_json_forms_are_one_model() -> None:
    text = parse_pipeline("resize:width=256,h=128/format:webp,quality=70")
    as_json = parse_pipeline(
        '[{"op": "resize", "w": 256, "h": 128}, {"op": "format", "format": "webp", "q": 70}]'
    )
    decoded = parse_pipeline([{"resize": {"w": 256, "h": 128}}, {"format": {"format": "webp", "q": "70"}}])
    assert text == as_json
    assert text.canonical() == decoded.canonical() == "resize:w=256,h=128/format:webp,q=70"
    assert parse_pipeline(text.to_json()) == text


def test_equal_pipelines_have_equal_canonical_forms() -> None:
    forms = [
        "resize:w=256/format:jpeg",
        "resize:w=256",
        "RESIZE:W=256,fit=inside/format:jpg,q=80",
        "autorotate:true/resize:w=256,upscale=false,kernel=lanczos3",
        ' [{"op":"resize","w":256}] ',
    ]
    assert {parse_pipeline(f).canonical() for f in forms} == {"resize:w=256/format:jpeg"}


def test_output_format_defaults_to_jpeg() -> None:
    pipeline = parse_pipeline("resize:w=10")
    assert (pipeline.output_format, pipeline.media_type, pipeline.extension) == (
        "jpeg",
        "image/jpeg",
        "jpg",
    )
    webp = parse_pipeline("format:webp")
    assert (webp.output_format, webp.media_type, webp.extension) == ("webp", "image/webp", "webp")


def test_presets() -> None:
    assert DEFAULT_PIPELINE == "thumbnail"
    thumb = parse_pipeline("thumbnail")
    assert thumb.output_format == "jpeg"
    assert parse_pipeline("dither").output_format == "png"
    mine = parse_pipeline("tiny", {"tiny": "resize:w=8/format:png"})
    assert mine.canonical() == "resize:w=8/format:png"
    replaced = parse_pipeline("thumbnail", {"thumbnail": "resize:w=64"})
    assert replaced.canonical() == "resize:w=64/format:jpeg"


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ("nosuchpreset", "unknown_preset", ["nosuchpreset", "thumbnail"]),
        ("resize:w=0", "invalid_pipeline", ["resize", "'w'", "greater than or equal to 1"]),
        ("resize:w=abc", "invalid_pipeline", ["resize", "'w'", "integer", "abc"]),
        ("resize:w=10,size=3", "invalid_pipeline", ["resize", "size", "expected one of"]),
        ("resize:fit=cover,w=3", "invalid_pipeline", ["resize", "fit=cover", "height"]),
        ("resize", "invalid_pipeline", ["resize", "width"]),
        ("format:bmp", "invalid_pipeline", ["format", "'format'", "jpeg"]),
        ("format:png/format:webp", "invalid_pipeline", ["format", "at most one"]),
        ("resize:w=1,w=2", "invalid_pipeline", ["twice"]),
        ("blur:2/zoom:3", "invalid_pipeline", ["unknown operation", "zoom"]),
        ("", "invalid_pipeline", ["empty"]),
        ("[1, 2", "invalid_pipeline", ["JSON"]),
        ("resize:w=10//format:png", "invalid_pipeline", ["step 2"]),
    ],
)
def test_errors_name_what_was_expected(spec: str, reason: str, words: list[str]) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(spec)
    err = caught.value
    assert isinstance(err, InvalidInput) and err.status == 400
    assert err.reason == reason
    for word in words:
        assert word in err.message, (word, err.message)
    assert err.to_dict()["error"]["reason"] == reason


def test_catalogue_lists_every_parameter_with_type_range_and_default() -> None:
    ops = {entry["name"]: entry for entry in catalogue()}
    assert {"resize", "format", "dither", "autorotate"} <= set(ops)
    w = ops["resize"]["params"]["w"]
    assert (w["type"], w["minimum"], w["maximum"], w["aliases"]) == ("integer", 1, 16384, ["width"])
    assert ops["format"]["params"]["format"]["enum"] == ["jpeg", "png", "webp", "avif", "tiff", "gif"]
    json.dumps(ops)


def test_load_presets_inline_json_and_files(tmp_path: Path) -> None:
    assert load_presets(None) == {}
    inline = load_presets('{"small": "resize:w=64/format:png", "list": [{"op": "dither"}]}')
    assert inline == {"small": "resize:w=64/format:png", "list": "dither/format:jpeg"}
    toml = tmp_path / "presets.toml"
    toml.write_text('[presets]\nbanner = "resize:w=1200,h=300,fit=cover/format:webp"\n')
    assert load_presets(str(toml)) == {"banner": "resize:w=1200,h=300,fit=cover/format:webp"}
    js = tmp_path / "presets.json"
    js.write_text(json.dumps({"presets": {"a": "format:gif"}}))
    assert load_presets(str(js)) == {"a": "format:gif"}


@pytest.mark.parametrize(
    "value",
    ['{"bad": "resize:w=0"}', '{"Bad Name": "dither"}', "{not json", "/nonexistent/presets.json"],
)
def test_bad_presets_stop_the_service_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_presets(value)
    assert "IMGPIPE_PRESETS" in caught.value.message


def test_every_builtin_preset_is_canonical_and_valid() -> None:
    from imgpipe.domain.pipeline import BUILTIN_PRESETS

    for name, spec in BUILTIN_PRESETS.items():
        assert parse_pipeline(name).canonical() == spec, name


def test_docs_describe_every_operation_and_parameter() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "pipelines.md").read_text()
    for entry in catalogue():
        assert f"### `{entry['name']}`" in docs, entry["name"]
        for param in entry["params"]:
            assert f"`{param}`" in docs, (entry["name"], param)
