"""Where the calls that cannot be stopped run: in the calling thread, or in helper processes.

Two calls hold on until they are done whatever the deadline: ``dither``'s
error diffusion (Pillow) and the quantising PNG encode that follows it
(libvips's ``pngsave`` with ``palette``, also asked for by ``format:png,palette``).
:class:`DiffusionHelpers` (what the service uses) keeps one helper process
(``python -m imgpipe.imageproc.diffusion``) per worker thread, started on
first use, and runs both there. The waiting thread releases the GIL, so
diffusions run in parallel and the event loop never stalls on one; when the
deadline passes first, the helper is killed at once (the work stops, nothing
is left running) and the next request starts a fresh one. The output is
Pillow's and libvips's in either place, so it is the same bytes as in the thread.

Invariant: a helper is used by one thread at a time, and a helper that did
not answer in time is never reused.
"""

from __future__ import annotations

import os
import queue
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Protocol

import pyvips

from imgpipe.imageproc import pngjob
from imgpipe.imageproc.diffusion import (
    ANSWER,
    DIFFUSE,
    ENCODE_PNG,
    KIND,
    REQUESTS,
    diffuse,
    read_memory,
    write_memory,
)
from imgpipe.imageproc.errors import ProcessingTimeout


class Diffuser(Protocol):
    """Runs the calls that cannot be stopped, stopping them at ``deadline`` (monotonic) if it can."""

    def diffuse(
        self, pixels: bytes, width: int, height: int, colors: int, mono: bool,
        deadline: float | None,
    ) -> bytes:
        """:func:`imgpipe.imageproc.diffusion.diffuse`."""
        ...

    def save_png(
        self, image: pyvips.Image, options: Mapping[str, object], deadline: float | None
    ) -> bytes:
        """``image.pngsave_buffer(**options)`` for options that quantise (``palette``)."""
        ...


class InThread:
    """The :class:`Diffuser` of library use: the calling thread, deaf to the deadline."""

    def diffuse(
        self, pixels: bytes, width: int, height: int, colors: int, mono: bool,
        deadline: float | None,
    ) -> bytes:
        return diffuse(pixels, width, height, colors, mono)

    def save_png(
        self, image: pyvips.Image, options: Mapping[str, object], deadline: float | None
    ) -> bytes:
        return bytes(image.pngsave_buffer(**options))


IN_THREAD = InThread()


class HelperFailed(RuntimeError):
    """A helper died or answered with an error."""


def _request(kind: int, *fields: int) -> bytes:
    return KIND.pack(kind) + REQUESTS[kind].pack(*fields)


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ProcessingTimeout("processing took longer than the time limit")


class _Helper:
    def __init__(self) -> None:
        self.memory = os.memfd_create("imgpipe-helper", os.MFD_CLOEXEC)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imgpipe.imageproc.diffusion", str(self.memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            pass_fds=(self.memory,),
        )

    def run(self, request: bytes, data: tuple[bytes, ...], deadline: float | None) -> bytes:
        assert self.process.stdin is not None
        write_memory(self.memory, *data)
        try:
            self.process.stdin.write(request)
        except OSError as exc:
            raise HelperFailed(f"helper gone ({exc})") from None
        status, size = ANSWER.unpack(self._read(ANSWER.size, deadline))
        body = read_memory(self.memory, size)
        if status != 0:
            raise HelperFailed(body.decode(errors="replace"))
        return body

    def _read(self, size: int, deadline: float | None) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        buffer = bytearray()
        while len(buffer) < size:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise ProcessingTimeout("processing took longer than the time limit")
            chunk = os.read(fd, size - len(buffer))
            if not chunk:
                raise HelperFailed(f"helper exited ({self.process.poll()})")
            buffer += chunk
        return bytes(buffer)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        os.close(self.memory)


class DiffusionHelpers:
    """A :class:`Diffuser` backed by up to ``size`` helper processes, killed at the deadline."""

    def __init__(self, size: int) -> None:
        self._idle: queue.LifoQueue[_Helper | None] = queue.LifoQueue()  # warm first
        for _ in range(size):
            self._idle.put(None)  # started on first use
        self._all: set[_Helper] = set()
        self.started = 0

    def diffuse(
        self, pixels: bytes, width: int, height: int, colors: int, mono: bool,
        deadline: float | None,
    ) -> bytes:
        request = _request(DIFFUSE, width, height, colors, int(mono), len(pixels))
        return self._run(request, (pixels,), deadline)

    def save_png(
        self, image: pyvips.Image, options: Mapping[str, object], deadline: float | None
    ) -> bytes:
        _check(deadline)
        job = pngjob.describe(image, options)
        if job is None:  # metadata a helper cannot rebuild: encoded here
            return bytes(image.pngsave_buffer(**options))
        _check(deadline)
        request = _request(ENCODE_PNG, len(job.description), len(job.pixels))
        return self._run(request, (job.description, job.pixels), deadline)

    def _run(self, request: bytes, data: tuple[bytes, ...], deadline: float | None) -> bytes:
        helper = self._idle.get()
        if helper is None or helper.process.poll() is not None:
            helper = self._start()
        try:
            out = helper.run(request, data, deadline)
        except BaseException:
            self._discard(helper)
            self._idle.put(None)
            raise
        self._idle.put(helper)
        _check(deadline)  # an answer that came too late is not used
        return out

    def _start(self) -> _Helper:
        helper = _Helper()
        self._all.add(helper)
        self.started += 1
        return helper

    def _discard(self, helper: _Helper) -> None:
        helper.kill()
        self._all.discard(helper)

    def pids(self) -> list[int]:
        """Process ids of the helpers alive now."""
        return [h.process.pid for h in self._all if h.process.poll() is None]

    def close(self) -> None:
        """Stop every helper (idempotent)."""
        for helper in list(self._all):
            self._discard(helper)
