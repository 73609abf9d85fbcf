"""CPU-time sampling of imgpipe's services, for benchmark runs (not imported otherwise).

py-spy samples wall-clock time a thread is not idle; on an oversubscribed
machine that is mostly time spent runnable but waiting for a CPU, charged to
whatever line the thread was on (often a socket write that woke the
receiver). This samples CPU time instead: ``ITIMER_PROF`` raises SIGPROF per
CPU time the process used (user + system; the kernel delivers it at its tick,
so one sample stands for ~4 ms here, see ``CPUPROF_INTERVAL``), and the
handler records the main thread's stack. Only the main thread's stacks are
right: imageproc's libvips threads are charged to whatever the main thread
was doing. Stacks are written as py-spy's raw (collapsed) format, one file per
process, so ``bench/profile_report.py`` reads them::

    .venv/bin/python bench/pipeline.py --case small \\
        --variant cpu:PYTHONPATH=$PWD/bench/cpuprof,CPUPROF_DIR=/tmp/cpu
    .venv/bin/python bench/profile_report.py /tmp/cpu

Active only with ``CPUPROF_DIR`` set, in processes started as ``python -m imgpipe.cli``.
"""

import atexit
import collections
import os
import signal
import sys
import threading
import time

_argv = getattr(sys, "orig_argv", sys.argv)
_dir = os.environ.get("CPUPROF_DIR")

if _dir and "imgpipe.cli" in _argv:
    _counts: collections.Counter[str] = collections.Counter()
    _interval = float(os.environ.get("CPUPROF_INTERVAL", "0.001"))
    _at = _argv.index("imgpipe.cli") + 1
    _path = os.path.join(_dir, f"{_argv[_at] if _at < len(_argv) else 'imgpipe'}-{os.getpid()}.txt")

    def _frame_name(code: object, line: int | None) -> str:
        name = getattr(code, "co_qualname", getattr(code, "co_name", "?"))
        where = "/".join(getattr(code, "co_filename", "?").split("/")[-2:])
        return f"{name} ({where}:{line})"

    def _sample(signum: int, frame: object) -> None:
        stack = []
        while frame is not None:
            stack.append(_frame_name(frame.f_code, frame.f_lineno))  # type: ignore[attr-defined]
            frame = frame.f_back  # type: ignore[attr-defined]
        _counts[";".join(reversed(stack))] += 1

    def _dump() -> None:
        os.makedirs(_dir, exist_ok=True)
        counts = dict(_counts)
        with open(_path + ".tmp", "w") as out:
            out.writelines(f"{stack} {n}\n" for stack, n in counts.items())
        os.replace(_path + ".tmp", _path)

    def _every_few_seconds() -> None:  # a process killed at the end still leaves its stacks
        while True:
            time.sleep(3)
            try:
                _dump()
            except OSError:
                pass

    def _stop() -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        _dump()

    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, _interval, _interval)
    atexit.register(_stop)
    threading.Thread(target=_every_few_seconds, daemon=True, name="cpuprof").start()
