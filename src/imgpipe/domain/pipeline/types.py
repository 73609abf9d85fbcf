"""Parameter types shared by the operation models: colours, enums, bounds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

MAX_DIMENSION = 16384
"""Largest width or height a pipeline may ask for."""

_NAMED_COLOURS = {
    "white": "ffffff",
    "black": "000000",
    "transparent": "00000000",
    "red": "ff0000",
    "green": "00ff00",
    "blue": "0000ff",
    "grey": "808080",
    "gray": "808080",
}
_HEX = re.compile(r"[0-9a-f]+")


def _colour(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 - pydantic turns ValueError into a validation error
            "expected a colour: rgb, rrggbb, rrggbbaa in hex, or a name"
        )
    text = value.strip().lower().removeprefix("#")
    text = _NAMED_COLOURS.get(text, text)
    if not _HEX.fullmatch(text) or len(text) not in (3, 4, 6, 8):
        raise ValueError("expected a colour: rgb, rrggbb, rrggbbaa in hex, or a name")
    if len(text) in (3, 4):
        text = "".join(c * 2 for c in text)
    return text.removesuffix("ff") if len(text) == 8 and text.endswith("ff") else text


Colour = Annotated[str, BeforeValidator(_colour)]
"""A colour, normalised to lower-case ``rrggbb`` or ``rrggbbaa`` hex."""


def colour_rgba(colour: str) -> tuple[int, int, int, int]:
    """The 0-255 red, green, blue and alpha of a normalised colour."""
    full = colour if len(colour) == 8 else colour + "ff"
    r, g, b, a = (int(full[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


def lowered(aliases: dict[str, str] | None = None) -> BeforeValidator:
    """A validator that lower-cases enum text and maps accepted synonyms."""
    table = aliases or {}

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            return table.get(text, text)
        return value

    return BeforeValidator(normalise)
