"""glibc arena cap of the imageproc service."""

from __future__ import annotations

import platform

import pytest

from imgpipe.imageproc.malloc import limit_arenas


def test_the_environment_setting_wins() -> None:
    assert limit_arenas(environ={"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_arenas_are_capped_on_glibc() -> None:
    assert limit_arenas(environ={}) is True
