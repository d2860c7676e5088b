"""Scaling sweeps: latency and memory against image size, regions, text length and batch size.

A sweep is a list of :class:`RunSpec` points, one axis varied at a time from the preset's own
workload, measured with :func:`run_many` into one run directory (so an interrupted sweep resumes:
the points already recorded are skipped).  :func:`curves` finds the swept axes again in any set of
records (a point's axis is the one workload key its spec sets, or the batch size when it sets
none), so the report does not need to be told which run was a sweep.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vlpbench.errors import VlpbenchError
from vlpbench.harness.runner import RunSpec, run_many
from vlpbench.store import RunDir

from .tables import Record, is_tiny, latency, memory_added_mb, quartiles

AXES = ("image_size", "regions", "text_len", "batch_size")
# x value and unit of one point on each axis (image size: area in kilopixels; ticks show H x W)
AXIS_UNITS = {"image_size": "kilopixel", "regions": "region", "text_len": "token", "batch_size": "sample"}
AXIS_TITLES = {
    "image_size": "image size (H x W, plotted by area in kilopixels)",
    "regions": "regions K",
    "text_len": "text length L (tokens)",
    "batch_size": "batch size B",
}


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``image_size=224x224,384x640`` -> ("image_size", [[224, 224], [384, 640]]); ints for the others."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise VlpbenchError(f"invalid --axis {text!r}; accepted: NAME=V1,V2,... with NAME one of {', '.join(AXES)}")
    if name not in AXES:
        raise VlpbenchError(f"invalid sweep axis {name!r}; accepted: {', '.join(AXES)}")
    out: list[Any] = []
    for v in values.split(","):
        v = v.strip()
        try:
            if name == "image_size":
                h, w = v.lower().split("x")
                val: Any = [int(h), int(w)]
                ok = val[0] > 0 and val[1] > 0
            else:
                val = int(v)
                ok = val > 0
        except ValueError:
            ok = False
        if not ok:
            want = "HxW with positive integers, e.g. 384x640" if name == "image_size" else "a positive integer"
            raise VlpbenchError(f"invalid {name} value {v!r} in --axis; accepted: {want}")
        if val in out:
            raise VlpbenchError(f"{name} value {v!r} is given twice in --axis")
        out.append(val)
    return name, out


def sweep_specs(
    targets: Sequence[tuple[str, str]], axes: Sequence[tuple[str, list[Any]]], base: RunSpec
) -> list[RunSpec]:
    """One spec per (target, axis, value): the axis set on ``base``, every other workload left at the preset's.

    ``targets``: (registry name, component) pairs; component ``arch`` or ``visual`` (or ``text``).
    A workload axis a component does not have (e.g. regions on a patch embedder) is refused when
    the point is built, with the component's options in the message.
    """
    if not targets:
        raise VlpbenchError("nothing to sweep; give --arch NAME[,NAME] and/or --visual NAME[,NAME]")
    if not axes:
        raise VlpbenchError(f"no --axis given; accepted: --axis NAME=V1,V2 with NAME one of {', '.join(AXES)}")
    specs = []
    for target, component in targets:
        for axis, values in axes:
            for v in values:
                if axis == "batch_size":
                    specs.append(replace(base, target=target, component=component, workload={}, batch_size=v))
                else:
                    specs.append(replace(base, target=target, component=component, workload={axis: v}))
    return specs


def point_label(spec: RunSpec) -> str:
    if spec.workload:
        ((axis, v),) = spec.workload.items()
        shown = "x".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        return f"{spec.target} {axis}={shown}"
    return f"{spec.target} batch_size={spec.batch_size}"


def run_sweep(
    specs: Sequence[RunSpec],
    run_dir: RunDir,
    isolated: bool = True,
    show_progress: bool = True,
    progress: Callable[[str, RunSpec], None] | None = None,
) -> list[Record]:
    """Measure every point into ``run_dir`` (points already recorded there are skipped).

    A tqdm bar on stderr names the point being measured; it updates between points, never inside
    a timed loop.  ``progress(event, spec)`` (event "run" or "skip") is called before each point.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(specs), file=sys.stderr, unit="point", disable=not show_progress, dynamic_ncols=True)
    started = [False]

    def cb(event: str, spec: RunSpec) -> None:
        if started[0]:
            bar.update(1)
        started[0] = True
        bar.set_description(f"{'measuring' if event == 'run' else 'recorded'} {point_label(spec)}")
        if progress:
            progress(event, spec)

    try:
        records = run_many(specs, run_dir, isolated=isolated, progress=cb)
        if started[0]:
            bar.update(1)
        bar.set_description(f"sweep done ({len(specs)} points)")
    finally:
        bar.close()
    return records


# -- analysis ---------------------------------------------------------------------------------------
@dataclass
class Curve:
    """Points of one target along one axis (all else equal), sorted by x."""

    axis: str
    target: str  # arch / embedder name
    component: str
    run: str | None
    label: str
    xs: list[float] = field(default_factory=list)
    ticks: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    def medians(self) -> list[float]:
        return [r["total"]["median_ms"] for r in self.records]

    def quartiles(self) -> list[tuple[float, float]]:
        return [quartiles(r["total"]) for r in self.records]

    def memory(self) -> list[float | None]:
        """Memory each point added while measured (see :func:`memory_added_mb`), MB."""
        return [memory_added_mb(r) for r in self.records]


def axis_of(rec: Record) -> tuple[str, Any] | None:
    """(axis, value) of a sweep point from its spec: the one workload key it sets, else batch size."""
    spec = rec.get("spec") or {}
    w = spec.get("workload") or {}
    if len(w) == 1:
        ((axis, v),) = w.items()
        return (axis, v) if axis in AXES else None
    if not w:
        return ("batch_size", spec.get("batch_size", 1))
    return None


def x_value(axis: str, v: Any) -> tuple[float, str]:
    if axis == "image_size":
        h, w = v
        return h * w / 1000.0, f"{h}x{w}"
    return float(v), str(v)


def curves(records: Sequence[Record], multi_run: bool = False) -> list[Curve]:
    """Every set of >= 2 latency records that differ only along one axis, as a :class:`Curve`."""
    groups: dict[str, Curve] = {}
    for r in latency(records):
        ax = axis_of(r)
        if ax is None:
            continue
        axis, v = ax
        spec = dict(r.get("spec") or {})
        spec.pop("protocol", None)
        spec.pop("workload", None)
        if axis == "batch_size":
            spec.pop("batch_size", None)
        gk = json.dumps([axis, spec, r.get("_run") if multi_run else None], sort_keys=True, default=str)
        if gk not in groups:
            name = f"{r['arch']}{' (tiny)' if is_tiny(r) else ''}"
            if axis != "batch_size" and spec.get("batch_size", 1) != 1:
                name += f" B={spec['batch_size']}"
            if multi_run and r.get("_run"):
                name += f" [{str(r['_run']).rstrip('/').split('/')[-1]}]"
            groups[gk] = Curve(axis, r["arch"], r.get("component", "arch"), r.get("_run"), name)
        x, tick = x_value(axis, v)
        groups[gk].xs.append(x)
        groups[gk].ticks.append(tick)
        groups[gk].records.append(r)
    out = []
    for c in groups.values():
        if len(set(c.xs)) < 2:
            continue
        order = np.argsort(c.xs, kind="stable")
        c.xs = [c.xs[i] for i in order]
        c.ticks = [c.ticks[i] for i in order]
        c.records = [c.records[i] for i in order]
        out.append(c)
    return sorted(out, key=lambda c: (AXES.index(c.axis), c.label))


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs (ms per axis unit)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def stage_slopes(curve: Curve) -> list[tuple[str, float]]:
    """(stage, slope of its median ms against the axis) for every leaf stage, steepest first.

    A stage missing from some point (e.g. a sampling stage that only runs above a size) counts 0 ms there.
    """
    names: list[str] = []
    for r in curve.records:
        for s in r["stages"]:
            if s["leaf"] and s["name"] not in names:
                names.append(s["name"])
    out = []
    for n in names:
        ys = [next((s["median_ms"] for s in r["stages"] if s["name"] == n), 0.0) for r in curve.records]
        out.append((n, slope(curve.xs, ys)))
    return sorted(out, key=lambda t: -t[1])


def fastest_stage(curve: Curve) -> tuple[str, float]:
    return stage_slopes(curve)[0]
