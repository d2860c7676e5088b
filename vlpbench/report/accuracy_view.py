"""Figure 1's view of the ViLT paper: latency measured in this run against accuracy on the real tasks.

One panel per task (VQAv2, NLVR2, COCO / Flickr30k R@1 both ways, zero-shot classification).  Per
architecture with a whole-model latency record, x is its total median latency with the IQR of its samples;
y is, where a ``vlpbench eval`` accuracy record of the same architecture and workload (``arch``, image size,
text length) exists, that measured accuracy (filled marker), else the accuracy its paper reports, carried
in the record's ``paper`` facts (hollow marker labelled "paper").  The table beside the figure says for
every point where each number came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .table import Column, Table, text

Record = dict[str, Any]


@dataclass(frozen=True)
class Panel:
    title: str  # panel title
    task: str  # the eval task whose records fill it
    datasets: tuple[str, ...]  # datasets of that task that count
    metric: str  # metric in the accuracy record (fraction 0-1)
    paper_key: str  # paper fact (percent) used when nothing was measured
    paper_split: str  # the split the paper number is on


PANELS = (
    Panel("VQAv2: VQA accuracy (%)", "vqa", ("vqav2",), "vqa_acc", "vqa_test_dev", "test-dev"),
    Panel("NLVR2: accuracy (%)", "nlvr2", ("nlvr2",), "nlvr2_acc", "nlvr2_test_p", "test-P"),
    Panel("COCO 5K: image->text R@1 (%)", "retrieval", ("coco",), "tr_r1", "coco_tr_r1", "5K test"),
    Panel("COCO 5K: text->image R@1 (%)", "retrieval", ("coco",), "ir_r1", "coco_ir_r1", "5K test"),
    Panel("Flickr30k 1K: image->text R@1 (%)", "retrieval", ("flickr30k",), "tr_r1", "flickr_tr_r1", "1K test"),
    Panel("Flickr30k 1K: text->image R@1 (%)", "retrieval", ("flickr30k",), "ir_r1", "flickr_ir_r1", "1K test"),
    Panel(
        "zero-shot classification: top-1 (%)",
        "zero-shot",
        ("imagefolder",),
        "top1",
        "imagenet_zero_shot",
        "ImageNet val",
    ),
)
COLUMNS = (
    text("task"),
    text("architecture"),
    Column("accuracy_pct", "accuracy %"),
    text("accuracy_from"),
    Column("latency_median_ms", "latency median ms"),
    Column("latency_iqr_ms", "latency IQR ms"),
    text("latency_from"),
    text("joined_on"),
)


@dataclass
class Point:
    panel: Panel
    arch: str
    accuracy: float  # percent
    measured: bool  # True: an accuracy record; False: the paper's number
    accuracy_from: str
    latency: Record


def _workload_key(rec: Record) -> tuple[Any, Any]:
    w = rec.get("workload") or {}
    size = w.get("image_size")
    return (tuple(size) if isinstance(size, (list, tuple)) else size, w.get("text_len"))


def _arch_latency(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        if r["kind"] == "latency" and r.get("component", "arch") == "arch" and r.get("total", {}).get("samples_ms"):
            out.setdefault(r["arch"], []).append(r)
    return out


def _pick(cands: Sequence[Record], acc: Record | None = None) -> Record | None:
    """The latency record a point is drawn at: same workload as ``acc`` (required when given), batch 1 first."""
    if acc is not None:
        cands = [r for r in cands if _workload_key(r) == _workload_key(acc)]
    ranked = sorted(cands, key=lambda r: 0 if (r.get("workload") or {}).get("batch_size", 1) == 1 else 1)
    return ranked[0] if ranked else None


def _real_accuracy(records: Sequence[Record]) -> list[Record]:
    """Accuracy records written by ``vlpbench eval`` (they name task and dataset; the study's do not)."""
    return [r for r in records if r["kind"] == "accuracy" and r.get("task") and r.get("dataset")]


def _measured_from(acc: Record) -> str:
    counts = acc.get("counts") or {}
    n = counts.get("questions") or counts.get("examples") or counts.get("images")
    return (
        f"measured: `vlpbench eval` record {acc['key']} ({acc['dataset']} {acc.get('split')}, {n} examples, "
        f"weights {acc.get('weights')})"
    )


def points(records: Sequence[Record]) -> list[Point]:
    """Every (panel, architecture) point: measured where an eval record joins, else the paper's number."""
    lat = _arch_latency(records)
    accs = _real_accuracy(records)
    pts: list[Point] = []
    for panel in PANELS:
        for arch, cands in sorted(lat.items()):
            measured = [
                (a, _pick(cands, a))
                for a in accs
                if a["arch"] == arch
                and a["task"] == panel.task
                and a["dataset"] in panel.datasets
                and isinstance((a.get("metrics") or {}).get(panel.metric), float)
            ]
            measured = [(a, r) for a, r in measured if r is not None]
            for a, r in measured:
                pts.append(Point(panel, arch, 100.0 * a["metrics"][panel.metric], True, _measured_from(a), r))
            paper = (_pick(cands) or {}).get("paper") or {}
            if not measured and isinstance(paper.get(panel.paper_key), (int, float)):
                cite = (paper.get("cite") or {}).get(panel.paper_key) or paper.get("source", "paper")
                pts.append(
                    Point(
                        panel,
                        arch,
                        float(paper[panel.paper_key]),
                        False,
                        f"paper: {cite} ({panel.paper_split}; quoted, not measured)",
                        _pick(cands),
                    )
                )
    return pts


def _iqr(rec: Record) -> tuple[float, float, float]:
    samples = np.asarray(rec["total"]["samples_ms"], dtype=float)
    q1, q3 = np.percentile(samples, [25, 75])
    return float(rec["total"]["median_ms"]), float(q1), float(q3)


def _latency_from(rec: Record) -> str:
    env = rec.get("env") or {}
    threads = (env.get("threads") or {}).get("intra_op")
    w = rec.get("workload") or {}
    weights = (rec.get("spec") or {}).get("weights")
    return (
        f"measured here: record {rec['key']}, {env.get('device', '?')}, {threads} thread(s), "
        f"batch {w.get('batch_size')}, {'weights ' + weights if weights else 'random weights'}"
    )


def table(pts: Sequence[Point]) -> Table:
    """Where every number of the figure comes from: one row per point (raw numbers, units in the headers)."""
    rows: list[list[Any]] = []
    for p in pts:
        med, q1, q3 = _iqr(p.latency)
        size = "x".join(map(str, p.latency.get("workload", {}).get("image_size") or [])) or "-"
        join = (
            f"arch + image size {size} + text length {p.latency.get('workload', {}).get('text_len')}"
            if p.measured
            else "arch (paper accuracy beside this run's latency)"
        )
        rows.append(
            [p.panel.title, p.arch, round(p.accuracy, 4), p.accuracy_from, med, q3 - q1, _latency_from(p.latency), join]
        )
    return Table(COLUMNS, rows)


def figure(pts: Sequence[Point], path: Path) -> Path | None:
    """One panel per task with points; filled = measured accuracy, hollow = paper.  None when there is nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [pa for pa in PANELS if any(p.panel == pa for p in pts)]
    if not panels:
        return None
    from matplotlib.ticker import FuncFormatter, NullFormatter

    archs = sorted({p.arch for p in pts})
    spans = [_iqr(p.latency) for p in pts]
    lo, hi = min(q1 for _, q1, _ in spans), max(q3 for _, _, q3 in spans)
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for p in (p for p in pts if p.panel == panel):
            med, q1, q3 = _iqr(p.latency)
            color = f"C{archs.index(p.arch) % 10}"
            ax.errorbar(
                [med],
                [p.accuracy],
                xerr=[[med - q1], [q3 - med]],
                fmt="o",
                markersize=8,
                capsize=3,
                color=color,
                markerfacecolor=color if p.measured else "white",
                markeredgewidth=1.6,
            )
            ax.annotate(
                p.arch + ("" if p.measured else " (paper)"),
                (med, p.accuracy),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
            )
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.6, hi * 3.0)  # one latency range for every panel, room for the labels
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.margins(y=0.15)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("latency ms, measured here (log; bar = IQR)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color="#444", label="measured accuracy (vlpbench eval)"),
        Line2D(
            [], [], marker="o", linestyle="", color="#444", markerfacecolor="white", label="paper accuracy (quoted)"
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def add_section(doc, writer, records: Sequence[Record], out: Path) -> None:
    """The report section: the figure (when any architecture has latency here) and its provenance table."""
    from .doc import Heading, Image, Para

    doc.add(Heading("Latency versus accuracy on the real tasks (Figure 1's view)"))
    pts = points(records)
    if not figure(pts, out / "figures" / "accuracy_view.png"):
        doc.add(
            Para(
                "No whole-architecture latency record here has an accuracy to plot (a `vlpbench eval` record "
                "of the same arch and workload, or a paper accuracy in its presets)."
            )
        )
        return
    doc.add(
        Image(
            "figures/accuracy_view.png",
            "x: total median latency measured in this run (bar: IQR of the "
            "samples); y: accuracy. Filled: measured by `vlpbench eval` on a real checkpoint (joined on arch, "
            "image size and text length); hollow, labelled paper: the paper's number, quoted.",
        )
    )
    doc.add(writer.table("accuracy-view", table(pts), caption="where each number of the figure comes from"))
