"""Property tests of the pipeline language: nothing crashes it, canonical forms round-trip."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from imgpipe.domain.pipeline import PipelineError, catalogue, parse_pipeline

CATALOGUE = {entry["name"]: entry for entry in catalogue()}
GRAMMAR = "resizwhfitcoverpngjpegformatdhblu:=,/%0123456789.-_ \t[]{}\"'\\~é"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def parses_or_refuses(spec: Any) -> None:
    try:
        pipeline = parse_pipeline(spec)
    except PipelineError as err:
        assert err.status == 400 and err.reason in ("invalid_pipeline", "unknown_preset")
        assert err.message
        return
    assert parse_pipeline(pipeline.canonical()) == pipeline


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_no_text_crashes_the_parser(text: str) -> None:
    parses_or_refuses(text)


@settings(max_examples=300)
@given(st.text(alphabet=GRAMMAR, max_size=120))
def test_no_grammar_soup_crashes_the_parser(text: str) -> None:
    parses_or_refuses(text)


@settings(max_examples=200)
@given(json_values)
def test_no_json_value_crashes_the_parser(value: Any) -> None:
    parses_or_refuses(value)
    parses_or_refuses(json.dumps(value))


def param_values(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    kind = spec["type"]
    if kind == "integer":
        return st.integers(spec.get("minimum", -(10**6)), spec.get("maximum", 10**6))
    if kind == "number":
        return st.floats(spec.get("minimum", -1e6), spec.get("maximum", 1e6), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    return st.one_of(
        st.sampled_from(["white", "000", "#ff0000", "12345678", "transparent"]),
        st.text(min_size=1, max_size=30),
    )


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(CATALOGUE)))
    params = CATALOGUE[name]["params"]
    chosen = draw(st.lists(st.sampled_from(sorted(params)), unique=True)) if params else []
    required = [k for k, v in params.items() if v["required"]]
    step: dict[str, Any] = {"op": name}
    for key in sorted(set(chosen) | set(required)):
        step[key] = draw(param_values(params[key]))
    return step


@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.lists(steps(), min_size=1, max_size=6))
def test_canonical_form_round_trips(json_steps: list[dict[str, Any]]) -> None:
    try:
        pipeline = parse_pipeline(json_steps)
    except PipelineError:
        assume(False)
        return
    text = pipeline.canonical()
    again = parse_pipeline(text)
    assert again == pipeline
    assert again.canonical() == text
    assert parse_pipeline(pipeline.to_json()) == pipeline
    assert parse_pipeline(json.dumps(pipeline.to_json())) == pipeline
    assert text.isascii() and " " not in text
