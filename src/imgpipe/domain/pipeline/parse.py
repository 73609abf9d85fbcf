"""Parsing the text and JSON forms of a pipeline into the validated model."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from imgpipe.domain.pipeline.base import OPERATIONS, Operation
from imgpipe.domain.pipeline.errors import PipelineError
from imgpipe.domain.pipeline.model import MAX_STEPS, Pipeline
from imgpipe.domain.pipeline.output import Autorotate, Format

MAX_SPEC_LENGTH = 8192
"""Longest pipeline text accepted (JSON or text form)."""
MAX_WRAPPING = 8
"""Most levels of JSON text and ``{"pipeline": ...}`` wrapping around the steps."""

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def _fail(message: str, **details: Any) -> PipelineError:
    return PipelineError(message, **{k: v for k, v in details.items() if v is not None})


def _expected(cls: type[Operation]) -> str:
    return ", ".join(cls.model_fields)


def build_step(name: Any, params: Mapping[str, Any], index: int) -> Operation:
    """Validate one step's parameters into its operation model."""
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"step {index + 1}: expected an operation name", step=index + 1)
    op_name = name.strip().lower()
    cls = OPERATIONS.get(op_name)
    if cls is None:
        known = ", ".join(sorted(OPERATIONS))
        raise _fail(
            f"step {index + 1}: unknown operation {name[:64]!r}; expected one of: {known}",
            step=index + 1,
            operation=name[:64],
        )
    values: dict[str, Any] = {}
    for raw_key, value in params.items():
        if not isinstance(raw_key, str):
            raise _fail(f"{op_name}: parameter names must be text", operation=op_name)
        key = raw_key.strip().lower()
        key = cls.aliases.get(key, key)
        if key not in cls.model_fields:
            raise _fail(
                f"{op_name}: unknown parameter {raw_key[:64]!r}; expected one of: {_expected(cls)}",
                operation=op_name,
                parameter=raw_key[:64],
                step=index + 1,
            )
        if key in values:
            raise _fail(
                f"{op_name}: parameter {key!r} given twice",
                operation=op_name,
                parameter=key,
                step=index + 1,
            )
        values[key] = value
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or None
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        suffix = f" (got {str(got)[:64]!r})" if loc and not isinstance(got, dict) else ""
        where = f"{op_name}: parameter {loc!r}: " if loc else f"{op_name}: "
        raise _fail(
            where + message + suffix, operation=op_name, parameter=loc, step=index + 1
        ) from None


def _text_step(text: str, index: int) -> Operation:
    name, _, arg_text = text.partition(":")
    cls = OPERATIONS.get(name.strip().lower())
    if cls is None:
        return build_step(name, {}, index)
    params: dict[str, Any] = {}
    if arg_text.strip():
        for position, token in enumerate(arg_text.split(",")):
            key, eq, value = token.partition("=")
            if not eq:
                if position == 0 and cls.main is not None:
                    params[cls.main] = unquote(token.strip())
                    continue
                what = f"{name.strip()[:64]}: expected key=value, got {token[:64]!r}"
                raise _fail(what, operation=name.strip()[:64], step=index + 1)
            if key.strip() in params:
                raise _fail(
                    f"{name.strip()[:64]}: parameter {key.strip()[:64]!r} given twice",
                    operation=name.strip()[:64],
                    parameter=key.strip()[:64],
                    step=index + 1,
                )
            params[key.strip()] = unquote(value.strip())
    elif arg_text or text.endswith(":"):
        raise _fail(f"{name.strip()[:64]}: empty argument list after ':'", step=index + 1)
    return build_step(name, params, index)


def _json_step(item: Any, index: int) -> Operation:
    if isinstance(item, str):
        return _text_step(item, index)
    if not isinstance(item, dict):
        raise _fail(f"step {index + 1}: expected an object or a text step", step=index + 1)
    if "op" in item:
        params = {k: v for k, v in item.items() if k != "op"}
        return build_step(item["op"], params, index)
    if len(item) == 1:
        ((name, params),) = item.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            params = {} if params is True else {"__main__": params}
            cls = OPERATIONS.get(str(name).strip().lower())
            if "__main__" in params and cls is not None and cls.main is not None:
                params = {cls.main: params["__main__"]}
        return build_step(name, params, index)
    raise _fail(f'step {index + 1}: expected {{"op": name, ...}}', step=index + 1)


def assemble(ops: list[Operation]) -> Pipeline:
    """Fold format and autorotate steps into pipeline settings and check limits."""
    steps: list[Operation] = []
    output: Format | None = None
    autorotate: Autorotate | None = None
    for op in ops:
        if isinstance(op, Format):
            if output is not None:
                raise _fail("format: at most one format step per pipeline", operation="format")
            output = op
        elif isinstance(op, Autorotate):
            if autorotate is not None:
                raise _fail("autorotate: at most one autorotate step", operation="autorotate")
            autorotate = op
        else:
            steps.append(op)
    if len(steps) > MAX_STEPS:
        raise _fail(f"too many steps: {len(steps)}, at most {MAX_STEPS}")
    return Pipeline(
        steps=tuple(steps),
        output=output or Format(),
        autorotate=autorotate.on if autorotate else True,
    )


def _unwrap(spec: Any) -> Any:
    """JSON text decoded and ``{"steps": ...}``/``{"pipeline": ...}`` opened, a few levels deep."""
    for _ in range(MAX_WRAPPING):
        if isinstance(spec, str):
            text = spec.strip()
            if not text:
                raise _fail("empty pipeline: expected steps such as 'resize:w=256/format:jpeg'")
            if len(text) > MAX_SPEC_LENGTH:
                raise _fail(f"pipeline too long: {len(text)} characters, at most {MAX_SPEC_LENGTH}")
            if text[0] not in "[{":
                return text
            try:
                spec = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise _fail(f"pipeline JSON does not parse: {exc}") from None
        elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("steps", "pipeline"):
            spec = next(iter(spec.values()))
        else:
            return spec
    raise _fail(f"pipeline nested too deeply: at most {MAX_WRAPPING} levels of "
                '{"pipeline": ...} or JSON text')


def parse_steps(spec: Any) -> Pipeline:
    """Parse a pipeline without preset lookup: text form, JSON text, or decoded JSON."""
    if isinstance(spec, Pipeline):
        return spec
    spec = _unwrap(spec)
    if isinstance(spec, str):
        parts = spec.split("/")
        if len(parts) > MAX_STEPS + 2:
            raise _fail(f"too many steps: {len(parts)}, at most {MAX_STEPS}")
        return assemble([_text_step(part, i) for i, part in enumerate(parts)])
    if isinstance(spec, dict):
        return assemble([_json_step(spec, 0)])
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise _fail("empty pipeline: expected at least one step")
        if len(spec) > MAX_STEPS + 2:
            raise _fail(f"too many steps: {len(spec)}, at most {MAX_STEPS}")
        return assemble([_json_step(item, i) for i, item in enumerate(spec)])
    raise _fail(f"expected pipeline text, a JSON list of steps or a preset name, got {type(spec).__name__}")


def is_bare_name(text: str) -> bool:
    """True when ``text`` could be a preset name (no arguments, no separators)."""
    return _NAME.fullmatch(text) is not None
