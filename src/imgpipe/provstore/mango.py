"""CouchDB Mango selectors, evaluated over plain JSON documents.

The subset a provenance store needs: field paths with dots, implicit and
explicit ``$eq``, the comparison operators, ``$in``/``$nin``, ``$exists``,
``$type``, ``$size``, ``$mod``, ``$regex``, ``$all``, ``$elemMatch``,
``$allMatch`` and the combinators ``$and``, ``$or``, ``$nor``, ``$not``.
As in CouchDB, a condition on a field that a document lacks never matches,
except ``$exists: false``; values of different types order as
null < false < true < numbers < strings < arrays < objects.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from imgpipe.errors import InvalidInput

_MISSING = object()


class InvalidSelector(InvalidInput):
    reason = "invalid_selector"


def _type_rank(value: Any) -> int:
    if value is None:
        return 0
    if value is False:
        return 1
    if value is True:
        return 2
    if isinstance(value, (int, float)):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, list):
        return 5
    return 6


def collate(a: Any, b: Any) -> int:
    """Compare two JSON values in CouchDB's order: -1, 0 or 1."""
    ra, rb = _type_rank(a), _type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 5:
        for x, y in zip(a, b, strict=False):
            c = collate(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 6:
        return collate(sorted(a.items()), sorted(b.items()))
    if ra in (3, 4):
        return int((a > b) - (a < b))
    return 0


def field_value(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` in ``doc``, or ``_MISSING``."""
    value = doc
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _json_type(value: Any) -> str:
    return ("null", "boolean", "boolean", "number", "string", "array", "object")[_type_rank(value)]


def _regex(value: Any, pattern: Any) -> bool:
    if not isinstance(pattern, str):
        raise InvalidSelector("$regex expects a string")
    return isinstance(value, str) and re.search(pattern, value) is not None


def _mod(value: Any, arg: Any) -> bool:
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, int) for a in arg)):
        raise InvalidSelector("$mod expects [divisor, remainder]")
    return isinstance(value, int) and not isinstance(value, bool) and value % arg[0] == arg[1]


def _list_arg(op: str, arg: Any) -> list[Any]:
    if not isinstance(arg, list):
        raise InvalidSelector(f"{op} expects an array")
    return arg


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda v, a: collate(v, a) == 0,
    "$ne": lambda v, a: collate(v, a) != 0,
    "$lt": lambda v, a: collate(v, a) < 0,
    "$lte": lambda v, a: collate(v, a) <= 0,
    "$gt": lambda v, a: collate(v, a) > 0,
    "$gte": lambda v, a: collate(v, a) >= 0,
    "$in": lambda v, a: any(
        collate(v, x) == 0 or (isinstance(v, list) and any(collate(e, x) == 0 for e in v))
        for x in _list_arg("$in", a)
    ),
    "$nin": lambda v, a: not any(collate(v, x) == 0 for x in _list_arg("$nin", a)),
    "$type": lambda v, a: _json_type(v) == a,
    "$size": lambda v, a: isinstance(v, list) and len(v) == a,
    "$mod": _mod,
    "$regex": _regex,
    "$all": lambda v, a: isinstance(v, list)
    and all(any(collate(e, x) == 0 for e in v) for x in _list_arg("$all", a)),
    "$elemMatch": lambda v, a: isinstance(v, list) and any(_match_value(e, a) for e in v),
    "$allMatch": lambda v, a: isinstance(v, list) and all(_match_value(e, a) for e in v),
}


def _is_operator_object(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(str(k).startswith("$") for k in value)


def _match_value(value: Any, condition: Any) -> bool:
    """Does ``value`` (possibly ``_MISSING``) satisfy ``condition``?"""
    if _is_operator_object(condition):
        for op, arg in condition.items():
            if op == "$exists":
                if (value is not _MISSING) != bool(arg):
                    return False
            elif op == "$not":
                if _match_value(value, arg):
                    return False
            elif op in ("$and", "$or", "$nor"):
                raise InvalidSelector(f"{op} belongs at the level of fields, not inside one")
            elif op not in _OPS:
                raise InvalidSelector(f"unsupported operator {op}")
            elif value is _MISSING or not _OPS[op](value, arg):
                return False
        return True
    if isinstance(condition, Mapping) and condition:
        return matches(value, condition) if isinstance(value, Mapping) else False
    return value is not _MISSING and collate(value, condition) == 0


def matches(doc: Any, selector: Mapping[str, Any]) -> bool:
    """Does ``doc`` satisfy the Mango ``selector``?"""
    if not isinstance(selector, Mapping):
        raise InvalidSelector("a selector is a JSON object")
    for key, cond in selector.items():
        if key == "$and":
            if not all(matches(doc, s) for s in _list_arg(key, cond)):
                return False
        elif key == "$or":
            if not any(matches(doc, s) for s in _list_arg(key, cond)):
                return False
        elif key == "$nor":
            if any(matches(doc, s) for s in _list_arg(key, cond)):
                return False
        elif key == "$not":
            if matches(doc, cond):
                return False
        elif key.startswith("$"):
            raise InvalidSelector(f"unsupported operator {key} at the top of a selector")
        elif not _match_value(field_value(doc, key), cond):
            return False
    return True


def equalities(selector: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float]:
    """Fields the selector requires to equal a string or number (for index look-ups)."""
    found: dict[str, str | int | float] = {}
    for key, cond in selector.items():
        if key == "$and" and isinstance(cond, list):
            for sub in cond:
                if isinstance(sub, Mapping):
                    found.update(equalities(sub, prefix))
            continue
        if key.startswith("$"):
            continue
        path = f"{prefix}{key}"
        if _is_operator_object(cond) and "$eq" in cond:
            cond = cond["$eq"]
        elif isinstance(cond, Mapping) and cond and not _is_operator_object(cond):
            found.update(equalities(cond, f"{path}."))
            continue
        if isinstance(cond, (str, int, float)) and not isinstance(cond, bool):
            found[path] = cond
    return found


def sort_docs(docs: list[dict[str, Any]], sort: Sequence[Any]) -> list[dict[str, Any]]:
    """Order ``docs`` by a Mango ``sort`` (``["a", {"b": "desc"}]``)."""
    keys: list[tuple[str, bool]] = []
    for item in sort:
        if isinstance(item, str):
            keys.append((item, False))
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, direction),) = item.items()
            if direction not in ("asc", "desc"):
                raise InvalidSelector("sort direction is 'asc' or 'desc'")
            keys.append((str(name), direction == "desc"))
        else:
            raise InvalidSelector("sort items are field names or {field: direction}")

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for name, desc in keys:
            va, vb = field_value(a, name), field_value(b, name)
            va, vb = (None if va is _MISSING else va), (None if vb is _MISSING else vb)
            c = collate(va, vb)
            if c:
                return -c if desc else c
        return 0

    return sorted(docs, key=functools.cmp_to_key(compare))
