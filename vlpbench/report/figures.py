"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global backend switch).

Each function takes records (and the numbers quoted from the paper, labelled as such), writes one
PNG and returns its path, or returns None when the records hold nothing to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sweep import AXIS_TITLES, AXIS_UNITS, Curve, fastest_stage
from .tables import Record, fmt, group_ms, label, memory_label, quartiles, schema_of, short_stage, ve_stages

# ViLT paper Figure 1 (dandelin/ViLT assets/figure.png; REFERENCE.md section 2): running time per
# visual-embedding schema, "averaged over 10K times on a Xeon E5-2650 CPU and an NVIDIA P40 GPU".
# Quoted from the paper, drawn hatched, never mixed with measured values.
PAPER_FIG1 = {
    "region": ("UNITER-Base", [("backbone", 75.0), ("RPN, RoIAlign, NMS, RoI heads (paper)", 810.0),
                               ("interaction (MI)", 15.0)]),
    "grid": ("Pixel-BERT-R50", [("backbone", 45.0), ("interaction (MI)", 15.0)]),
    "patch": ("ViLT-B/32", [("linear embedding (paper)", 0.4), ("interaction (MI)", 15.0)]),
}
PAPER_HW = "paper, P40 GPU"
SCHEMA_ORDER = ("region", "grid", "patch")
CLASS_COLORS = {"a": "#1f77b4", "b": "#2ca02c", "c": "#d62728", "d": "#9467bd", "unclassified": "#7f7f7f", None: "#7f7f7f"}
GROUP_COLORS = {"VE": "#4c72b0", "TE": "#dd8452", "MI": "#55a868"}
MARKERS = "os^Dv<>pPX*h"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def _stage_colors(keys: Sequence[str]) -> Dict[str, Any]:
    """A distinct colour per stage name (tab20 then tab20b), the MI / TE / head groups fixed."""
    from matplotlib import colormaps

    fixed = {"interaction (MI)": GROUP_COLORS["MI"], "text (TE)": GROUP_COLORS["TE"], "head": "#8c8c8c"}
    # tab20 without its greens, oranges and greys (kept for the fixed groups), then tab20b
    palette = [colormaps["tab20"](i) for i in range(20) if i not in (2, 3, 4, 5, 14, 15)]
    palette += [colormaps["tab20b"](i) for i in range(20)]
    out, i = {}, 0
    for k in keys:
        if k in fixed:
            out[k] = fixed[k]
        else:
            out[k] = palette[i % len(palette)]
            i += 1
    return out


def _measured_segments(rec: Record) -> List[Tuple[str, float]]:
    segs = [(short_stage(s["name"]), float(s["median_ms"])) for s in ve_stages(rec)]
    if rec.get("component", "arch") == "arch":
        for g, name in (("TE", "text (TE)"), ("MI", "interaction (MI)"), ("head", "head")):
            v = group_ms(rec, g)
            if v:
                segs.append((name, v))
    return segs


def figure1(records: Sequence[Record], path: Path) -> Optional[Path]:
    """Per-stage median time per visual-embedding schema, the paper's bars beside the measured ones.

    Left: each bar's stages stacked as a share of its own time (which stage dominates); right: the
    bar's total on a log axis, so a sub-millisecond patch projection shows next to a detector.
    """
    measured = [(schema_of(r), r) for r in records]
    measured = [(s, r) for s, r in measured if s is not None]
    if not measured:
        return None
    bars: List[Tuple[str, List[Tuple[str, float]], bool]] = []
    for schema in SCHEMA_ORDER:
        model, segs = PAPER_FIG1[schema]
        bars.append((f"{schema}: {model} ({PAPER_HW})", segs, True))
        for s, r in measured:
            if s == schema:
                bars.append((f"{schema}: {label(r)} (measured, {r['env'].get('device')})", _measured_segments(r), False))
    keys: List[str] = []
    for _, segs, _ in bars:
        for k, _ in segs:
            if k not in keys:
                keys.append(k)
    colors = _stage_colors(keys)
    fig = _figure(15, 1.6 + 0.42 * len(bars))
    gs = fig.add_gridspec(1, 2, width_ratios=[2.2, 1.0], wspace=0.05)
    ax_s, ax_t = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    y = np.arange(len(bars))[::-1]
    totals = []
    for yi, (name, segs, is_paper) in zip(y, bars):
        total = sum(v for _, v in segs if v > 0)
        totals.append(total)
        left = 0.0
        style = dict(edgecolor="black" if is_paper else "white", hatch="//" if is_paper else None, linewidth=0.6,
                     height=0.72)
        for k, v in segs:
            if v <= 0:
                continue
            share = 100 * v / total
            ax_s.barh(yi, share, left=left, color=colors[k], **style)
            if share >= 12:
                ax_s.text(left + share / 2, yi, f"{fmt(v, 3)} ms", ha="center", va="center", fontsize=7)
            left += share
        ax_t.barh(yi, total, color="#bbbbbb" if is_paper else "#555555", **style)
        ax_t.text(total * 1.15, yi, f"{fmt(total, 3)} ms", va="center", fontsize=8)
    ax_s.set_xlim(0, 100)
    ax_s.set_yticks(y)
    ax_s.set_yticklabels([b[0] for b in bars], fontsize=8)
    ax_s.set_xlabel("share of the bar's summed stage time (%); segments are stages in run order, large ones labelled in ms")
    ax_s.set_title("stages (median ms per forward)")
    ax_t.set_xscale("log")
    ax_t.set_xlim(min(totals) / 3, max(totals) * 12)
    ax_t.set_yticks(y)
    ax_t.set_yticklabels([])
    ax_t.set_xlabel("summed stage time (ms, log scale)")
    ax_t.set_title("total")
    ax_t.grid(axis="x", which="major", alpha=0.3)
    for ax in (ax_s, ax_t):
        ax.set_ylim(-0.6, len(bars) - 0.4)
    fig.suptitle("Figure-1 view: where the time goes per visual-embedding schema (region, grid, patch)\n"
                 "hatched = quoted from the ViLT paper (P40 GPU, full-size models); solid = measured here", y=1.0)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[k], label=k) for k in keys]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="hatched: paper value"))
    ax_t.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="stage")
    return _save(fig, path)


def taxonomy(records: Sequence[Record], path: Path) -> Optional[Path]:
    """VE / TE / MI shares per architecture, stacked to 100%, with measured and paper class."""
    recs = [r for r in records if r.get("taxonomy")]
    if not recs:
        return None
    fig = _figure(12, 1.4 + 0.5 * len(recs))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(recs))[::-1]
    for yi, r in zip(y, recs):
        t = r["taxonomy"]
        left = 0.0
        for g in ("VE", "TE", "MI"):
            share = 100 * t[f"{g}_share"]
            name = {"VE": "visual embedder", "TE": "text embedder"}.get(g, "modality interaction")
            ax.barh(yi, share, left=left, color=GROUP_COLORS[g], height=0.65,
                    label=f"{g}: {name}" if yi == y[0] else None)
            if share >= 7:
                ax.text(left + share / 2, yi, f"{share:.0f}%", ha="center", va="center", fontsize=8, color="white")
            left += share
        paper = t.get("paper_class") or "-"
        mark = {True: "agrees", False: "differs", None: ""}[t.get("matches_paper")]
        ax.text(101.5, yi, f"measured ({t['class']}) | paper ({paper}) {mark}", va="center", fontsize=8,
                color=CLASS_COLORS.get(t["class"], "#333"))
    ax.set_xlim(0, 100)
    ax.set_yticks(y)
    ax.set_yticklabels([label(r) for r in recs], fontsize=8)
    ax.set_xlabel("share of VE + TE + MI median time (%), measured here")
    ax.set_title("Taxonomy view: VE / TE / MI share per architecture\n"
                 "(a) VE>TE>MI  (b) VE=TE>MI  (c) VE>MI>TE  (d) MI>VE=TE;  class measured here vs the paper's")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(recs)), ncol=3, fontsize=8)
    fig.subplots_adjust(right=0.78)
    return _save(fig, path)


def latency_accuracy(points: Sequence[Dict[str, Any]], path: Path) -> Optional[Path]:
    """Latency (log x) against each accuracy metric; one marker per architecture, colour = measured class."""
    pts = [p for p in points if p["latency"] is not None]
    if not pts:
        return None
    metrics = sorted({p["metric"] for p in pts})
    archs = sorted({p["arch"] for p in pts})
    ncol = min(3, len(metrics))
    nrow = int(np.ceil(len(metrics) / ncol))
    fig = _figure(5.2 * ncol + 2.2, 4.0 * nrow)
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for p in (p for p in pts if p["metric"] == m):
            tot = p["latency"]["total"]
            q1, q3 = quartiles(tot)
            med = tot["median_ms"]
            ax.errorbar(med, p["mean"], yerr=p["std"] if p["std"] is not None else None,
                        xerr=[[med - q1], [q3 - med]], fmt=MARKERS[archs.index(p["arch"]) % len(MARKERS)],
                        color=CLASS_COLORS.get(p["class"], "#7f7f7f"), markersize=8, capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("latency: total median per forward (ms, log), measured here")
        ax.set_ylabel(f"{m} (mean over seeds)")
        ax.set_title(m, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], color="#444", linestyle="", label=a)
               for i, a in enumerate(archs)]
    classes = sorted({p["class"] for p in pts}, key=str)
    handles += [Line2D([], [], marker="s", color=CLASS_COLORS.get(c, "#7f7f7f"), linestyle="",
                       label=f"class ({c})" if c else "class unknown") for c in classes]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="marker = architecture\ncolour = measured class")
    fig.suptitle("Latency versus accuracy (error bars: y = std over seeds, x = IQR of latency samples)")
    fig.tight_layout()
    return _save(fig, path)


def scaling(curves: Sequence[Curve], axis: str, path: Path) -> Optional[Path]:
    """Latency and peak memory against one swept axis, one line per architecture / embedder."""
    cs = [c for c in curves if c.axis == axis]
    if not cs:
        return None
    fig = _figure(13, 4.8)
    ax_t, ax_m = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ticks: Dict[float, str] = {}
    for i, c in enumerate(cs):
        med = np.asarray(c.medians())
        q = np.asarray(c.quartiles())
        stage, sl = fastest_stage(c)
        color = f"C{i % 10}"
        ax_t.errorbar(c.xs, med, yerr=[med - q[:, 0], q[:, 1] - med], marker=MARKERS[i % len(MARKERS)],
                      color=color, capsize=3,
                      label=f"{c.label}\n  fastest-growing stage: {stage} (+{sl:.3g} ms/{AXIS_UNITS[axis]})")
        mem = c.memory()
        if all(m is not None for m in mem):
            ax_m.plot(c.xs, mem, marker=MARKERS[i % len(MARKERS)], color=color, label=c.label)
        ticks.update(zip(c.xs, c.ticks))
    for ax in (ax_t, ax_m):
        ax.set_xlabel(AXIS_TITLES[axis])
        ax.grid(alpha=0.3)
        xs = sorted(ticks)
        ax.set_xticks(xs)
        ax.set_xticklabels([ticks[x] for x in xs], rotation=30 if axis == "image_size" else 0, fontsize=8)
    ax_t.set_ylabel("total median per forward (ms); bars = IQR")
    ax_t.set_title(f"latency vs {axis}")
    cuda = any((c.records[0].get("memory") or {}).get("cuda_peak_allocated_mb") is not None for c in cs)
    ax_m.set_ylabel("CUDA peak allocated (MB)" if cuda else "peak RSS minus RSS before measuring (MB)")
    method = {memory_label(c.records[0]) for c in cs}
    ax_m.set_title(f"memory added vs {axis}\n({'; '.join(sorted(method))})", fontsize=10)
    for ax in (ax_t, ax_m):
        lo, hi = ax.get_ylim()
        ax.set_ylim(0, hi * 1.35 if hi > 0 else 1)  # headroom for the legend
    ax_t.legend(fontsize=7, loc="upper left")
    if ax_m.lines:
        ax_m.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Scaling with {axis}, measured here")
    fig.tight_layout()
    return _save(fig, path)

