"""A traced pass: one Chrome / Perfetto trace per configuration, apart from the timed samples.

``torch.profiler`` adds its own cost to every op, so its pass runs after the timed iterations and
its numbers never enter a record's samples.  The stage timer opens a ``record_function`` range per
stage while the profiler runs (see :mod:`vlpbench.harness.timer`), so the trace shows vlpbench's
dotted stage names (``visual.rpn.nms``) around the ops they contain; on CUDA the same names go out
as NVTX ranges for Nsight Systems.  Open the file in https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .timer import StageTimer


def trace_path(trace_dir: str, arch: str, key: str) -> Path:
    """``DIR/<arch>-<config key>.json``: one file per configuration, named so a listing reads."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in arch)
    return Path(trace_dir) / f"{safe}-{key}.json"


def trace_pass(fn: Callable[..., Any], device: str, path: Path, iterations: int = 1) -> dict[str, Any]:
    """Run ``fn(stage)`` ``iterations`` times under ``torch.profiler`` and write its Chrome trace to ``path``.

    Returns what the record keeps: the file, the iterations traced and the stage names the trace holds.
    """
    from torch.profiler import ProfilerActivity, profile

    from vlpbench.store import atomic_write_text

    cuda = str(device).startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    timer = StageTimer(device, ranges=True)
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(iterations):
            timer.begin_iteration()
            fn(timer.stage)
            sample = timer.end_iteration()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.export-", suffix=".json", dir=path.parent)
    os.close(fd)
    try:
        prof.export_chrome_trace(tmp)
        text = Path(tmp).read_text()
    finally:
        os.unlink(tmp)
    atomic_write_text(path, text)
    return {
        "file": str(path),
        "iterations": iterations,
        "stages": list(sample.order),
        "format": "Chrome trace JSON (torch.profiler; opens in Perfetto)",
    }


def trace_event_names(path: str) -> list[str]:
    """Names of every event in a Chrome trace file (what a reader of the trace sees)."""
    data = json.loads(Path(path).read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e.get("name", "") for e in events]
