"""Peak memory of a measured pass.

CUDA: ``torch.cuda`` peak allocated and reserved bytes, reset before the pass.
CPU: the peak resident set size.  A process's RSS high-water mark (``ru_maxrss``) cannot be reset,
so an isolated subprocess per configuration reports it exactly (``method: ru_maxrss``); in-process,
a sampling thread records the peak RSS during the pass (``method: sampled``, every ``interval_s``),
which can miss a peak shorter than the interval.
"""

from __future__ import annotations

import resource
import sys
import threading
from typing import Any

MB = 1024 * 1024


def ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # Linux reports KiB


class MemoryMonitor:
    def __init__(self, device: str = "cpu", isolated: bool = False, interval_s: float = 0.005) -> None:
        self.device = str(device)
        self.isolated = isolated
        self.interval_s = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline_mb = 0.0

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self._peak = max(self._peak, proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemoryMonitor:
        import psutil

        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._baseline_mb = psutil.Process().memory_info().rss / MB
        self._peak = 0
        if not self.isolated:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rss_before_mb": round(self._baseline_mb, 1)}
        if self.isolated:
            out.update({"rss_peak_mb": round(ru_maxrss_mb(), 1), "method": "ru_maxrss"})
        else:
            out.update(
                {"rss_peak_mb": round(self._peak / MB, 1), "method": "sampled", "interval_ms": self.interval_s * 1e3}
            )
        if self.device.startswith("cuda"):
            import torch

            out.update(
                {
                    "cuda_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / MB, 1),
                    "cuda_peak_reserved_mb": round(torch.cuda.max_memory_reserved() / MB, 1),
                }
            )
        return out
