"""Object keys: built from identifiers imgpipe made, never from a client's input.

Every part of a key is checked: letters, digits, ``.``, ``_`` and ``-`` only,
no empty, ``.`` or ``..`` part, bounded length. A client's file name is kept
as object metadata and in provenance, never in a key.
"""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 512
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,8}$")


def safe_part(part: str) -> bool:
    """Whether ``part`` may appear between the slashes of a key."""
    return bool(_PART.match(part)) and ".." not in part


def object_key(*parts: str) -> str:
    """``parts`` joined with ``/``; ValueError when a part or the whole is unsafe."""
    for part in parts:
        if not safe_part(part):
            raise ValueError(f"unsafe object key part {part[:40]!r}")
    key = "/".join(parts)
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"object key longer than {MAX_KEY_LENGTH} characters")
    return key


def safe_extension(extension: str) -> str:
    """A file extension for a key: lower-case letters and digits, else ``bin``."""
    ext = extension.lower().lstrip(".")
    return ext if _EXTENSION.match(ext) else "bin"
