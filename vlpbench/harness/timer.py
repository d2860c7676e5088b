"""Stage timer: ``with timer.stage("visual.rpn.nms", "VE"): ...``.

CPU: ``time.perf_counter_ns`` at stage entry and exit.
CUDA: a pair of CUDA events per stage and per iteration, recorded on the current stream with no
host synchronisation inside the iteration; :meth:`StageTimer.end_iteration` synchronises once and
then reads every event.  Wall time of the iteration is recorded as well.

Clocks, events and the synchronise call are injectable so that both code paths are testable on
a machine without a GPU.

Profiler ranges: while a ``torch.profiler`` session is running (checked once per iteration), or when
the timer is built with ``ranges=True`` or ``VLPBENCH_RANGES=1`` is set (for Nsight Systems, which torch
cannot see), each stage also opens ``torch.profiler.record_function(name)`` and, on CUDA, an NVTX range
of the same dotted name.  Otherwise the stage pays one boolean test and nothing else, so the timed
path is the one the empty-stage calibration measures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from vlpbench.stages import GROUPS

_NO_RANGE = nullcontext()


@dataclass
class _Record:
    name: str
    group: str
    parent: int | None
    start: object = None
    end: object = None


@dataclass
class IterationSample:
    """One timed iteration.

    total_ms: end-to-end time of the iteration (CUDA: between the first and last event).
    wall_ms: host wall-clock time including the final synchronisation.
    stages: stage name -> ms, summed when a name repeats within the iteration.
    groups: stage name -> group; leaves: names that never enclosed another stage.
    count: number of stage entries in the iteration.
    """

    total_ms: float
    wall_ms: float
    stages: dict[str, float] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    leaves: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    count: int = 0

    @property
    def leaf_sum_ms(self) -> float:
        return sum(self.stages[n] for n in self.leaves)


class StageTimer:
    def __init__(
        self,
        device: str = "cpu",
        *,
        clock: Callable[[], int] = time.perf_counter_ns,
        event_factory: Callable[[], object] | None = None,
        synchronize: Callable[[], None] | None = None,
        ranges: bool | None = None,
    ) -> None:
        self.cuda = str(device).startswith("cuda")
        self.ranges = ranges  # None: only while a torch profiler runs (or VLPBENCH_RANGES=1)
        self._ranges_now = False
        self._clock = clock
        if self.cuda:
            import torch

            self._event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
            self._synchronize = synchronize or torch.cuda.synchronize
        else:
            self._event_factory = event_factory
            self._synchronize = synchronize
        self._records: list[_Record] = []
        self._stack: list[int] = []
        self._iter_start = None
        self._wall_start = 0
        self._active = False

    # -- timestamps -------------------------------------------------------------------------
    def _mark(self) -> object:
        if self.cuda:
            ev = self._event_factory()
            ev.record()
            return ev
        return self._clock()

    def _elapsed_ms(self, start: object, end: object) -> float:
        if self.cuda:
            return float(start.elapsed_time(end))  # CUDA events report milliseconds
        return (end - start) / 1e6

    def _want_ranges(self) -> bool:
        if self.ranges is not None:
            return bool(self.ranges)
        if os.environ.get("VLPBENCH_RANGES") == "1":
            return True
        import torch

        return bool(torch.autograd.profiler._is_profiler_enabled)

    @contextmanager
    def _range(self, name: str) -> Iterator[None]:
        """A ``record_function`` range (and an NVTX range on CUDA) named ``name``."""
        import torch

        if self.cuda:
            torch.cuda.nvtx.range_push(name)
        try:
            with torch.profiler.record_function(name):
                yield
        finally:
            if self.cuda:
                torch.cuda.nvtx.range_pop()

    # -- iteration --------------------------------------------------------------------------
    def begin_iteration(self) -> None:
        if self._active:
            raise RuntimeError("begin_iteration called twice without end_iteration")
        self._records = []
        self._stack = []
        self._active = True
        self._ranges_now = self._want_ranges()
        self._wall_start = self._clock()
        self._iter_start = self._mark()

    @contextmanager
    def stage(self, name: str, group: str | None = None) -> Iterator[None]:
        if not self._active:
            raise RuntimeError(f"stage {name!r} entered outside begin_iteration/end_iteration")
        group = group or "other"
        if group not in GROUPS:
            raise ValueError(f"invalid stage group {group!r} for {name!r}; accepted: {', '.join(GROUPS)}")
        rec = _Record(name, group, self._stack[-1] if self._stack else None)
        self._records.append(rec)
        self._stack.append(len(self._records) - 1)
        with self._range(name) if self._ranges_now else _NO_RANGE:
            rec.start = self._mark()
            try:
                yield
            finally:
                rec.end = self._mark()
                self._stack.pop()

    def end_iteration(self) -> IterationSample:
        if not self._active:
            raise RuntimeError("end_iteration called without begin_iteration")
        iter_end = self._mark()
        if self.cuda:
            self._synchronize()  # one host sync per iteration, before any event is read
        wall_end = self._clock()
        self._active = False
        if self._stack:
            raise RuntimeError(f"stage {self._records[self._stack[-1]].name!r} was not closed")
        sample = IterationSample(
            total_ms=self._elapsed_ms(self._iter_start, iter_end),
            wall_ms=(wall_end - self._wall_start) / 1e6,
            count=len(self._records),
        )
        parents = {r.parent for r in self._records if r.parent is not None}
        parent_names = {self._records[i].name for i in parents}
        for _i, rec in enumerate(self._records):
            ms = self._elapsed_ms(rec.start, rec.end)
            if rec.name not in sample.stages:
                sample.order.append(rec.name)
                sample.stages[rec.name] = 0.0
            sample.stages[rec.name] += ms
            prev = sample.groups.setdefault(rec.name, rec.group)
            if prev != rec.group:
                raise ValueError(f"stage {rec.name!r} recorded in groups {prev!r} and {rec.group!r}")
        sample.leaves = [n for n in sample.order if n not in parent_names]
        return sample
