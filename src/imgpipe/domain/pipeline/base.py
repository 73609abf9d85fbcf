"""The base of every operation model and the registry that names them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Operation(BaseModel):
    """One step of a pipeline: a name plus typed, validated parameters.

    ``main`` names the parameter that the text form may give first without a
    key (``format:webp``, ``blur:2``); ``aliases`` maps accepted synonyms of
    parameter names to the canonical ones (``width`` -> ``w``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    main: ClassVar[str | None] = None
    aliases: ClassVar[Mapping[str, str]] = {}

    def arguments(self) -> list[tuple[str, Any]]:
        """Parameters that differ from their defaults, in declaration order."""
        result = []
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if value is None or (not field.is_required() and value == field.default):
                continue
            result.append((key, value))
        return result


OPERATIONS: dict[str, type[Operation]] = {}
"""Every operation model by name; the catalogue is generated from it."""


def register(cls: type[Operation]) -> type[Operation]:
    """Class decorator adding an operation model to :data:`OPERATIONS`."""
    OPERATIONS[cls.name] = cls
    return cls
