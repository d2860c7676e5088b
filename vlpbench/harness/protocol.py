"""The measurement protocol.

1. Warm-up iterations, uninstrumented (default 3 on CPU, 10 on CUDA).
2. The cost of an empty stage is calibrated with the same timer.
3. Timed iterations until both ``min_iters`` and ``min_time_s`` are reached (at most ``max_iters``).
   Instrumented and uninstrumented iterations alternate, so both see the same machine state:
   the instrumented ones give per-stage times and the closure (sum of leaf stages versus
   end-to-end), the uninstrumented ones give the end-to-end time with no stage markers, and the
   difference of the two medians is the measured instrumentation overhead.

Inputs are made once, before timing starts, by the caller; ``fn(stage)`` runs one iteration.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional

from vlpbench.errors import VlpbenchError
from vlpbench.stages import GROUPS, null_stage

from .stats import summarize
from .timer import IterationSample, StageTimer


@dataclass(frozen=True)
class Protocol:
    warmup: Optional[int] = None   # warm-up iterations; None = 3 on CPU, 10 on CUDA
    min_iters: int = 5             # timed iterations at least (each of instrumented and uninstrumented)
    min_time_s: float = 2.0        # and at least this much time spent in instrumented iterations
    max_iters: int = 200           # at most this many instrumented iterations
    uninstrumented: bool = True    # alternate with iterations that carry no stage markers

    def validate(self) -> "Protocol":
        if self.warmup is not None and (not isinstance(self.warmup, int) or self.warmup < 0):
            raise VlpbenchError(f"invalid warmup {self.warmup!r}; accepted: an integer >= 0")
        if not isinstance(self.min_iters, int) or self.min_iters < 1:
            raise VlpbenchError(f"invalid iteration count {self.min_iters!r}; accepted: an integer >= 1")
        if not isinstance(self.max_iters, int) or self.max_iters < self.min_iters:
            raise VlpbenchError(f"invalid max_iters {self.max_iters!r}; accepted: an integer >= min_iters ({self.min_iters})")
        if not (self.min_time_s >= 0):
            raise VlpbenchError(f"invalid min_time_s {self.min_time_s!r}; accepted: seconds >= 0")
        return self

    def warmup_for(self, device: str) -> int:
        if self.warmup is not None:
            return self.warmup
        return 10 if str(device).startswith("cuda") else 3

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class Measurement:
    """Runs the protocol step by step (so pytest-benchmark can drive the instrumented rounds)."""

    def __init__(self, fn: Callable[..., Any], device: str = "cpu", protocol: Optional[Protocol] = None,
                 timer: Optional[StageTimer] = None, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.fn = fn
        self.device = str(device)
        self.protocol = (protocol or Protocol()).validate()
        self.timer = timer or StageTimer(self.device, clock=clock)
        self._clock = clock
        self.samples: List[IterationSample] = []
        self.plain_ms: List[float] = []
        self.empty_stage_ms: Optional[float] = None
        self.last_output: Any = None
        self.warmup_ms: List[float] = []

    def _sync(self) -> None:
        if self.timer.cuda:
            self.timer._synchronize()

    def warmup(self) -> None:
        for _ in range(self.protocol.warmup_for(self.device)):
            t0 = self._clock()
            self.last_output = self.fn(null_stage)
            self._sync()
            self.warmup_ms.append((self._clock() - t0) / 1e6)

    def calibrate_empty_stage(self, n: int = 200) -> float:
        """Median cost (ms) of entering and leaving one empty stage, measured with this timer."""
        per = []
        for _ in range(5):
            self.timer.begin_iteration()
            for _ in range(n):
                with self.timer.stage("_empty", "other"):
                    pass
            s = self.timer.end_iteration()
            per.append(s.total_ms / n)
        per.sort()
        self.empty_stage_ms = per[len(per) // 2]
        return self.empty_stage_ms

    def instrumented_iteration(self) -> IterationSample:
        self.timer.begin_iteration()
        self.last_output = self.fn(self.timer.stage)
        sample = self.timer.end_iteration()
        self.samples.append(sample)
        return sample

    def uninstrumented_iteration(self) -> float:
        if self.timer.cuda:
            start, end = self.timer._event_factory(), self.timer._event_factory()
            start.record()
            self.fn(null_stage)
            end.record()
            self._sync()
            ms = float(start.elapsed_time(end))
        else:
            t0 = self._clock()
            self.fn(null_stage)
            ms = (self._clock() - t0) / 1e6
        self.plain_ms.append(ms)
        return ms

    def done(self) -> bool:
        p = self.protocol
        n = len(self.samples)
        spent_s = sum(s.wall_ms for s in self.samples) / 1e3
        return n >= p.max_iters or (n >= p.min_iters and spent_s >= p.min_time_s)

    def run(self, progress: Optional[Callable[[int], None]] = None) -> "Measurement":
        self.warmup()
        self.calibrate_empty_stage()
        while not self.done():
            self.instrumented_iteration()
            if self.protocol.uninstrumented:
                self.uninstrumented_iteration()
            if progress:
                progress(len(self.samples))
        return self

    # -- results ----------------------------------------------------------------------------
    def result(self) -> Dict[str, Any]:
        if not self.samples:
            raise RuntimeError("no instrumented iterations were run")
        names: List[str] = []
        groups: Dict[str, str] = {}
        leaves: set = set()
        for s in self.samples:
            for n in s.order:
                if n not in groups:
                    names.append(n)
                groups.setdefault(n, s.groups[n])
            leaves.update(s.leaves)
        stages = []
        for n in names:
            vals = [s.stages.get(n, 0.0) for s in self.samples]
            stages.append({"name": n, "group": groups[n], "leaf": n in leaves, **summarize(vals)})
        totals = [s.total_ms for s in self.samples]
        unaccounted = [s.total_ms - s.leaf_sum_ms for s in self.samples]
        group_stats = {}
        for g in GROUPS:
            members = [n for n in names if groups[n] == g and n in leaves]
            if members:
                group_stats[g] = summarize([sum(s.stages.get(n, 0.0) for n in members) for s in self.samples])
        total = summarize(totals)
        out: Dict[str, Any] = {
            "stages": stages,
            "groups": group_stats,
            "total": total,
            "wall": summarize([s.wall_ms for s in self.samples]),
            "unaccounted": summarize(unaccounted),
            "unaccounted_ms": float(summarize(unaccounted, with_samples=False)["median_ms"]),
            "overhead": {
                "empty_stage_ms": self.empty_stage_ms,
                "stage_entries_per_iter": self.samples[-1].count,
                "estimated_ms": (self.empty_stage_ms or 0.0) * self.samples[-1].count,
            },
        }
        if self.plain_ms:
            plain = summarize(self.plain_ms)
            out["uninstrumented"] = plain
            out["overhead"]["measured_ms"] = total["median_ms"] - plain["median_ms"]
        return out


def measure(fn: Callable[..., Any], device: str = "cpu", protocol: Optional[Protocol] = None,
            progress: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Run the whole protocol on ``fn(stage)`` and return the timing part of a result record."""
    return Measurement(fn, device, protocol).run(progress).result()
