"""Progress of a long measurement on stderr: iteration i of n, elapsed time, estimated time left.

Called by :class:`vlpbench.harness.protocol.Measurement` *between* iterations, never inside the timed
region (habits to avoid: progress bars inside the timed loop).  Lines are throttled to one every
``every_s`` seconds (the first and last always print), so a fast model does not flood the terminal
and a slow one (a full-size region model at ~15 s a forward) shows every iteration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


class Progress:
    """``update(phase, i, n, elapsed_s, eta_s)`` prints ``vlpbench: LABEL PHASE i/n, elapsed .., ~.. left``."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._phase: str | None = None

    def update(self, phase: str, i: int, n: int, elapsed_s: float, eta_s: float | None, bound: str = "") -> None:
        now = self._clock()
        # throttled within a phase; the first line of each phase (warm-up, timed) and the last always print
        if self._last is not None and phase == self._phase and now - self._last < self.every_s and i < n:
            return
        self._last, self._phase = now, phase
        left = f", ~{_fmt_s(eta_s)} left" if eta_s is not None else ""
        of = f"{bound}{n}"
        print(
            f"vlpbench: {self.label} {phase} {i}/{of}, elapsed {_fmt_s(elapsed_s)}{left}", file=self.stream, flush=True
        )


def progress_stream() -> TextIO | None:
    """Where a measurement subprocess writes progress: the file descriptor its parent passed in
    ``VLPBENCH_PROGRESS_FD`` (the parent's stderr, so the lines reach the user while the child's own
    stderr is captured for error reports), else this process's stderr."""
    import os

    fd = os.environ.get("VLPBENCH_PROGRESS_FD")
    if fd and fd.isdigit():
        try:
            return os.fdopen(int(fd), "w", buffering=1, closefd=False)
        except OSError:
            return None
    return sys.stderr
