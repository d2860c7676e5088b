"""The measurement protocol.

1. Warm-up iterations, uninstrumented (default 3 on CPU, 10 on CUDA).
2. The cost of an empty stage is calibrated with the same timer.
3. Timed iterations until both ``min_iters`` and ``min_time_s`` are reached (at most ``max_iters``).
   Instrumented and uninstrumented iterations alternate in pairs, the order flipping every pair
   (ABBA), so both see the same machine state and neither always runs second: the instrumented ones
   give per-stage times and the closure (sum of leaf stages versus end-to-end), the uninstrumented
   ones give the end-to-end time with no stage markers.  The instrumentation overhead is the median
   of the paired differences with a bootstrap 95% CI; when the CI spans zero the overhead is "not
   resolvable at this noise" and the empty-stage bound (cost of one empty stage x stages entered)
   is what remains.
4. Optional stopping by precision (``target_ci``, as ``torch.utils.benchmark``'s ``blocked_autorange``):
   after the minimums, iterate until the 95% CI of the end-to-end median is within +-target of the
   median, at most ``max_iters`` iterations or ``max_time_s`` seconds; the record says which stopped it.

Inputs are made once, before timing starts, by the caller; ``fn(stage)`` runs one iteration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vlpbench.errors import VlpbenchError
from vlpbench.stages import GROUPS, null_stage

from .progress import Progress
from .stats import median_ci, summarize
from .timer import IterationSample, StageTimer


@dataclass(frozen=True)
class Protocol:
    warmup: int | None = None  # warm-up iterations; None = 3 on CPU, 10 on CUDA
    min_iters: int = 5  # timed iterations at least (each of instrumented and uninstrumented)
    min_time_s: float = 2.0  # and at least this much time spent in instrumented iterations
    max_iters: int = 200  # at most this many instrumented iterations
    uninstrumented: bool = True  # alternate with iterations that carry no stage markers
    target_ci: float | None = None  # stop when the 95% CI of the median is within +-this fraction (0.02)
    max_time_s: float | None = None  # time cap of the instrumented iterations (target_ci default: 300 s)

    def validate(self) -> Protocol:
        if self.warmup is not None and (not isinstance(self.warmup, int) or self.warmup < 0):
            raise VlpbenchError(f"invalid warmup {self.warmup!r}; accepted: an integer >= 0")
        if not isinstance(self.min_iters, int) or self.min_iters < 1:
            raise VlpbenchError(f"invalid iteration count {self.min_iters!r}; accepted: an integer >= 1")
        if not isinstance(self.max_iters, int) or self.max_iters < self.min_iters:
            raise VlpbenchError(
                f"invalid max_iters {self.max_iters!r}; accepted: an integer >= min_iters ({self.min_iters})"
            )
        if not (self.min_time_s >= 0):
            raise VlpbenchError(f"invalid min_time_s {self.min_time_s!r}; accepted: seconds >= 0")
        if self.target_ci is not None and not (isinstance(self.target_ci, (int, float)) and 0 < self.target_ci < 1):
            raise VlpbenchError(
                f"invalid target CI {self.target_ci!r}; accepted: a fraction in (0, 1), e.g. 0.02 for +-2%"
            )
        if self.max_time_s is not None and not (self.max_time_s > 0):
            raise VlpbenchError(f"invalid max_time_s {self.max_time_s!r}; accepted: seconds > 0")
        return self

    def time_cap_s(self) -> float | None:
        if self.max_time_s is not None:
            return self.max_time_s
        return 300.0 if self.target_ci is not None else None

    def warmup_for(self, device: str) -> int:
        if self.warmup is not None:
            return self.warmup
        return 10 if str(device).startswith("cuda") else 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Measurement:
    """Runs the protocol step by step (so pytest-benchmark can drive the instrumented rounds)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        device: str = "cpu",
        protocol: Protocol | None = None,
        timer: StageTimer | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
        progress: Progress | None = None,
    ) -> None:
        self.fn = fn
        self.device = str(device)
        self.protocol = (protocol or Protocol()).validate()
        self.timer = timer or StageTimer(self.device, clock=clock)
        self._clock = clock
        self.progress = progress
        self.samples: list[IterationSample] = []
        self.plain_ms: list[float] = []
        self.pairs: list[tuple[float, float]] = []  # (instrumented total, uninstrumented) ms, run back to back
        self._pending: dict[str, float] = {}
        self.empty_stage_ms: float | None = None
        self.last_output: Any = None
        self.warmup_ms: list[float] = []
        self.stopped_by: str | None = None
        self.ci_rel: float | None = None
        self._next_ci_check = 0
        self._t0: int | None = None

    def _sync(self) -> None:
        if self.timer.cuda:
            self.timer._synchronize()

    def _elapsed_s(self) -> float:
        if self._t0 is None:
            self._t0 = self._clock()
        return (self._clock() - self._t0) / 1e9

    def warmup(self) -> None:
        n = self.protocol.warmup_for(self.device)
        self._elapsed_s()
        for i in range(n):
            t0 = self._clock()
            self.last_output = self.fn(null_stage)
            self._sync()
            self.warmup_ms.append((self._clock() - t0) / 1e6)
            if self.progress:
                mean_s = sum(self.warmup_ms) / len(self.warmup_ms) / 1e3
                self.progress.update("warm-up", i + 1, n, self._elapsed_s(), mean_s * (n - i - 1))

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

    def _pair(self, kind: str, ms: float) -> None:
        other = "plain" if kind == "inst" else "inst"
        if other in self._pending:
            mine = {kind: ms, other: self._pending.pop(other)}
            self.pairs.append((mine["inst"], mine["plain"]))
        else:
            self._pending[kind] = ms

    def instrumented_iteration(self) -> IterationSample:
        self.timer.begin_iteration()
        self.last_output = self.fn(self.timer.stage)
        sample = self.timer.end_iteration()
        self.samples.append(sample)
        self._pair("inst", sample.total_ms)
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
        self._pair("plain", ms)
        return ms

    def timed_round(self) -> None:
        """One instrumented iteration, and (unless disabled) one uninstrumented, in alternating order."""
        if self.protocol.uninstrumented and len(self.samples) % 2 == 1:
            self.uninstrumented_iteration()
            self.instrumented_iteration()
        else:
            self.instrumented_iteration()
            if self.protocol.uninstrumented:
                self.uninstrumented_iteration()

    def _spent_s(self) -> float:
        return sum(s.wall_ms for s in self.samples) / 1e3

    def planned_iters(self) -> tuple[int, str]:
        """Iterations the protocol will run as far as known now, and "" or "<=" when it is only a bound."""
        p, n = self.protocol, len(self.samples)
        per_s = self._spent_s() / n if n else None
        if p.target_ci is not None:
            cap = p.time_cap_s()
            bound = p.max_iters if not per_s else min(p.max_iters, max(n, math.ceil(cap / per_s)))
            return max(bound, n), "<="
        if not per_s:
            return p.min_iters, ""
        return min(p.max_iters, max(p.min_iters, n, math.ceil(p.min_time_s / per_s))), ""

    def _precise_enough(self) -> bool:
        n = len(self.samples)
        if n < self._next_ci_check:
            return False
        self._next_ci_check = max(n + 1, math.ceil(n * 1.1))  # bootstrap on a geometric schedule, not every iter
        totals = [s.total_ms for s in self.samples]
        lo, hi = median_ci(totals)
        med = float(np.median(totals))
        if lo is None or med <= 0:
            return False
        self.ci_rel = max(hi - med, med - lo) / med
        return self.ci_rel <= self.protocol.target_ci

    def done(self) -> bool:
        p = self.protocol
        n = len(self.samples)
        spent_s = self._spent_s()
        if n >= p.max_iters:
            self.stopped_by = "max_iters"
            return True
        if n < p.min_iters or spent_s < p.min_time_s:
            return False
        if p.target_ci is None:
            self.stopped_by = "min_iters/min_time"
            return True
        if self._precise_enough():
            self.stopped_by = "target_ci"
            return True
        if spent_s >= p.time_cap_s():
            self.stopped_by = "max_time"
            return True
        return False

    def timed_loop(self) -> None:
        """Timed rounds until :meth:`done`, with a progress line between rounds (outside the timed region)."""
        while not self.done():
            self.timed_round()
            if self.progress:
                n, bound = self.planned_iters()
                i = len(self.samples)
                per_s = (self._spent_s() + sum(self.plain_ms) / 1e3) / i
                eta = None if bound else max(0.0, (n - i) * per_s)
                self.progress.update("timed iteration", i, n, self._elapsed_s(), eta, bound)

    def run(self) -> Measurement:
        self.warmup()
        self.calibrate_empty_stage()
        self.timed_loop()
        return self

    # -- results ----------------------------------------------------------------------------
    def overhead(self) -> dict[str, Any]:
        """Empty-stage bound and, from the paired iterations, the measured overhead with its 95% CI."""
        n_entries = self.samples[-1].count
        out: dict[str, Any] = {
            "empty_stage_ms": self.empty_stage_ms,
            "stage_entries_per_iter": n_entries,
            "estimated_ms": (self.empty_stage_ms or 0.0) * n_entries,
        }
        if self.plain_ms:
            out["measured_ms"] = float(np.median(self.samples_total()) - np.median(self.plain_ms))
        out.update(paired_overhead(self.pairs))
        return out

    def samples_total(self) -> list[float]:
        return [s.total_ms for s in self.samples]

    def precision(self) -> dict[str, Any]:
        p = self.protocol
        if p.target_ci is not None and self.ci_rel is None and len(self.samples) >= 3:
            self._next_ci_check = 0
            self._precise_enough()
        return {
            "target_ci": p.target_ci,
            "reached": (self.ci_rel is not None and p.target_ci is not None and self.ci_rel <= p.target_ci),
            "ci_rel": self.ci_rel,
            "stopped_by": self.stopped_by,
            "iterations": len(self.samples),
            "time_cap_s": p.time_cap_s(),
        }

    def result(self) -> dict[str, Any]:
        if not self.samples:
            raise RuntimeError("no instrumented iterations were run")
        names: list[str] = []
        groups: dict[str, str] = {}
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
        totals = self.samples_total()
        unaccounted = [s.total_ms - s.leaf_sum_ms for s in self.samples]
        group_stats = {}
        for g in GROUPS:
            members = [n for n in names if groups[n] == g and n in leaves]
            if members:
                group_stats[g] = summarize([sum(s.stages.get(n, 0.0) for n in members) for s in self.samples])
        out: dict[str, Any] = {
            "stages": stages,
            "groups": group_stats,
            "total": summarize(totals),
            "wall": summarize([s.wall_ms for s in self.samples]),
            "unaccounted": summarize(unaccounted),
            "unaccounted_ms": float(summarize(unaccounted, with_samples=False)["median_ms"]),
            "overhead": self.overhead(),
            "precision": self.precision(),
        }
        if self.plain_ms:
            out["uninstrumented"] = summarize(self.plain_ms)
        return out


NOT_RESOLVABLE = "not resolvable at this noise"


def paired_overhead(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Instrumentation overhead from back-to-back (instrumented, uninstrumented) pairs: the median paired
    difference with its bootstrap 95% CI, in ms and as a share of the uninstrumented median.

    ``resolvable`` is False when the CI spans zero (or fewer than 3 pairs): the overhead is then
    smaller than this run's noise, and only the empty-stage bound bounds it.
    """
    if not pairs:
        return {}
    diffs = [a - b for a, b in pairs]
    plain_med = float(np.median([b for _, b in pairs]))
    med = float(np.median(diffs))
    lo, hi = median_ci(diffs)
    resolvable = lo is not None and (lo > 0 or hi < 0)
    pct = lambda v: None if v is None or plain_med <= 0 else 100.0 * v / plain_med  # noqa: E731
    return {
        "paired_n": len(pairs),
        "paired_ms": float(med),
        "paired_ci95_ms": [lo, hi],
        "paired_pct": pct(med),
        "paired_ci95_pct": [pct(lo), pct(hi)],
        "resolvable": bool(resolvable),
        "verdict": f"{med:+.3g} ms, 95% CI [{lo:+.3g}, {hi:+.3g}] ms" if resolvable else NOT_RESOLVABLE,
    }


def measure(
    fn: Callable[..., Any], device: str = "cpu", protocol: Protocol | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the whole protocol on ``fn(stage)`` and return the timing part of a result record."""
    return Measurement(fn, device, protocol, progress=progress).run().result()
