"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global backend switch).

Each function takes records (and the numbers quoted from the paper, labelled as such), writes one
PNG and returns its path, or returns None when the records hold nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .sweep import AXIS_TITLES, AXIS_UNITS, Curve, fastest_stage
from .tables import (
    CLOSE_MARGIN,
    Record,
    class_margin,
    flags,
    fmt,
    is_close_call,
    label,
    memory_label,
    quartiles,
    schema_of,
    short_stage,
    ve_stages,
)

# ViLT paper Figure 1 (Kim et al., ICML 2021; docs/reference.md): running time per
# visual-embedding schema, "averaged over 10K times on a Xeon E5-2650 CPU and an NVIDIA P40 GPU".
# Quoted from the paper, drawn hatched, never mixed with measured values.
PAPER_FIG1 = {
    "region": (
        "UNITER-Base",
        [("backbone", 75.0), ("RPN, RoIAlign, NMS, RoI heads (paper)", 810.0), ("interaction (MI)", 15.0)],
    ),
    "grid": ("Pixel-BERT-R50", [("backbone", 45.0), ("interaction (MI)", 15.0)]),
    "patch": ("ViLT-B/32", [("linear embedding (paper)", 0.4), ("interaction (MI)", 15.0)]),
}
PAPER_HW = "paper, P40 GPU"
SCHEMA_ORDER = ("region", "grid", "patch")
CLASS_COLORS = {
    "a": "#1f77b4",
    "b": "#2ca02c",
    "c": "#d62728",
    "d": "#9467bd",
    "unclassified": "#7f7f7f",
    None: "#7f7f7f",
}
GROUP_COLORS = {"VE": "#4c72b0", "TE": "#dd8452", "MI": "#55a868"}
MARKERS = "os^Dv<>pPX*h"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path, data: dict[str, Any] | None = None) -> Path:
    """Write the PNG and, when given, ``<name>.json`` beside it: the numbers the figure draws, for programs."""
    from vlpbench.store import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    if data is not None:
        atomic_write_json(path.with_suffix(".json"), data)
    return path


def _bar_data(bars) -> list[dict[str, Any]]:
    out = []
    for name, segs, rec in bars:
        row: dict[str, Any] = {
            "label": name,
            "segments": [{"stage": k, "median_ms": v, "iqr_ms": i} for k, v, i in segs],
        }
        if rec is not None:
            row.update(
                {
                    "key": rec["key"],
                    "total_median_ms": rec["total"]["median_ms"],
                    "total_iqr_ms": rec["total"]["iqr_ms"],
                    "flags": flags(rec) or None,
                }
            )
        else:
            row["total_ms"] = sum(v for _, v, _ in segs)
        out.append(row)
    return out


MAX_COLOURS = 9  # measured stage colours in the Figure-1 view: the largest VE stages, the rest grouped
FIXED_KEYS = {
    "other VE stages": "#c6d4e1",
    "text (TE)": GROUP_COLORS["TE"],
    "interaction (MI)": GROUP_COLORS["MI"],
    "head": "#8c6d31",
    "unaccounted": "#d9d9d9",
}
VE_PALETTE = ["#1f4e79", "#4c72b0", "#8172b3", "#937860", "#da8bc3", "#64b5cd", "#ccb974", "#c44e52", "#2f7f7f"]


def _iqr_half(st: dict[str, Any]) -> float:
    return float(st.get("iqr_ms") or 0.0) / 2


def _segments(rec: Record, keep: Sequence[str]) -> list[tuple[str, float, float]]:
    """(key, median ms, IQR ms) per segment: kept VE stages, the other VE stages summed, TE, MI, head, unaccounted.

    The median of a summed group is not the sum of medians, so grouped segments use the record's
    per-iteration group statistics where it has them (TE, MI, head) and the sum of medians otherwise.
    """
    segs: list[tuple[str, float, float]] = []
    other_ms, other_iqr = 0.0, 0.0
    for st in ve_stages(rec):
        name = short_stage(st["name"])
        if name in keep:
            segs.append((name, float(st["median_ms"]), float(st["iqr_ms"])))
        else:
            other_ms, other_iqr = other_ms + float(st["median_ms"]), other_iqr + float(st["iqr_ms"])
    if other_ms > 0:
        segs.append(("other VE stages", other_ms, other_iqr))
    groups = rec.get("groups") or {}
    for g, key in (("TE", "text (TE)"), ("MI", "interaction (MI)"), ("head", "head")):
        if g in groups and rec.get("component", "arch") == "arch":
            segs.append((key, float(groups[g]["median_ms"]), float(groups[g]["iqr_ms"])))
    un = rec.get("unaccounted") or {}
    if rec.get("unaccounted_ms") is not None:
        segs.append(("unaccounted", max(float(rec["unaccounted_ms"]), 0.0), float(un.get("iqr_ms") or 0.0)))
    return segs


def _kept_stages(records: Sequence[Record]) -> list[str]:
    """The VE stages that get their own colour: the largest by their biggest share of any bar."""
    best: dict[str, float] = {}
    for r in records:
        tot = float(r["total"]["median_ms"]) or 1.0
        for st in ve_stages(r):
            k = short_stage(st["name"])
            best[k] = max(best.get(k, 0.0), float(st["median_ms"]) / tot)
    order = sorted(best, key=lambda k: -best[k])
    room = MAX_COLOURS - 4  # TE, MI, unaccounted and "other VE stages" keep theirs
    return order if len(order) <= room + 1 else order[:room]


def _flagged(rec: Record) -> str:
    f = flags(rec)
    return f" [{f}]" if f else ""


def _share_panel(ax, bars, colors, paper: bool) -> None:
    """Each bar's segments as a share of its summed segments, labelled in ms, IQR whiskers at segment ends."""
    for yi, (_, segs, _) in enumerate(bars):
        y = len(bars) - 1 - yi
        tot = sum(v for _, v, _ in segs) or 1.0
        left = 0.0
        for k, v, iqr in segs:
            share = 100 * v / tot
            ax.barh(
                y,
                share,
                left=left,
                height=0.7,
                color=colors.get(k, "#bbbbbb"),
                edgecolor="black" if paper else "white",
                hatch="//" if paper else None,
                linewidth=0.6,
            )
            if share >= 9:
                lab = f"{k}\n{fmt(v, 3)} ms" if paper else f"{fmt(v, 3)} ms"
                ax.text(
                    left + share / 2,
                    y,
                    lab,
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="black" if paper or k in ("unaccounted", "other VE stages") else "white",
                    bbox=dict(facecolor="white", edgecolor="none", pad=1.0) if paper else None,
                )
            if not paper and iqr > 0:
                ax.errorbar(left + share, y, xerr=50 * iqr / tot, color="black", lw=0.8, capsize=2)
            left += share
    ax.set_xlim(0, 102)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars][::-1], fontsize=8)
    for tick, (_, _, rec) in zip(ax.get_yticklabels(), bars[::-1]):
        if rec is not None and flags(rec):
            tick.set_color("#b2182b")


def _total_panel(ax, bars, paper: bool) -> None:
    """Each bar's total on a log axis: the record's total median with its IQR (the table's number)."""
    totals = []
    for yi, (_, segs, rec) in enumerate(bars):
        y = len(bars) - 1 - yi
        if rec is None:
            total, lo, hi = sum(v for _, v, _ in segs), 0.0, 0.0
            note = " (paper: no spread given)"
        else:
            total = float(rec["total"]["median_ms"])
            q1, q3 = quartiles(rec["total"])
            lo, hi = max(total - q1, 0.0), max(q3 - total, 0.0)
            note = f" (IQR {fmt(rec['total']['iqr_ms'], 2)})"
        totals.append(total)
        ax.barh(
            y,
            total,
            height=0.7,
            color="#bbbbbb" if paper else "#555555",
            edgecolor="black" if paper else "white",
            hatch="//" if paper else None,
            linewidth=0.6,
        )
        if not paper:
            ax.errorbar(total, y, xerr=[[lo], [hi]], color="#d62728", lw=1.2, capsize=3)
        ax.text(total * 1.6 + hi, y, f"{fmt(total, 4)} ms{note}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(totals) / 3, max(totals) * 60)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([])
    ax.grid(axis="x", which="major", alpha=0.3)


def figure1(records: Sequence[Record], path: Path) -> Path | None:
    """Per-stage median time per visual-embedding schema; the ViLT paper's bars in a panel of their own.

    Top (measured here): left, each configuration's stages as shares of its summed stage medians, labelled
    in ms with IQR whiskers; right, its total median (the summary table's number) on a log axis with the
    IQR.  Bottom (quoted, P40 GPU): the paper's Figure 1 bars, hatched, on axes of their own.  Noisy or
    busy configurations are marked in red.  Minor VE stages share one colour so fewer than ten are used.
    """
    measured = [(schema_of(r), r) for r in records]
    measured = [(s, r) for s, r in measured if s is not None]
    if not measured:
        return None
    recs = [r for sch in SCHEMA_ORDER for s, r in measured if s == sch]
    keep = _kept_stages(recs)
    colors = {**{k: VE_PALETTE[i % len(VE_PALETTE)] for i, k in enumerate(keep)}, **FIXED_KEYS}
    bars = [(f"{schema_of(r)}: {label(r)}{_flagged(r)}", _segments(r, keep), r) for r in recs]
    paper = [
        (f"{sch}: {PAPER_FIG1[sch][0]}", [(k, v, 0.0) for k, v in PAPER_FIG1[sch][1]], None) for sch in SCHEMA_ORDER
    ]
    paper_colors = {
        k: c
        for k, c in zip(
            sorted({k for _, segs, _ in paper for k, _, _ in segs}),
            ("#f0f0f0", "#d0d0d0", "#e8e8e8", "#bdbdbd", "#f7f7f7"),
        )
    }
    fig = _figure(12.5, 2.8 + 0.45 * (len(bars) + len(paper)))
    gs = fig.add_gridspec(
        2,
        2,
        width_ratios=[1.9, 1.0],
        height_ratios=[max(len(bars), 1) + 1.6, len(paper) + 0.6],
        wspace=0.04,
        hspace=0.55,
    )
    ax_s, ax_t = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    px_s, px_t = fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1])
    _share_panel(ax_s, bars, colors, paper=False)
    _total_panel(ax_t, bars, paper=False)
    _share_panel(px_s, paper, paper_colors, paper=True)
    _total_panel(px_t, paper, paper=True)
    dev = ", ".join(sorted({str(r["env"].get("device")) for r in recs}))
    ax_s.set_title(
        f"measured here ({dev}): stages as share of the bar (labels: median ms; whiskers: IQR)", fontsize=9, loc="left"
    )
    ax_t.set_title("total median ms per forward (log), IQR in red", fontsize=9, loc="left")
    px_s.set_title(
        "quoted from the ViLT paper, Figure 1 (P40 GPU, full-size models): not measured here", fontsize=9, loc="left"
    )
    px_t.set_title("paper total ms (log)", fontsize=9, loc="left")
    px_s.set_xlabel("share of the bar's summed stage time (%)")
    px_t.set_xlabel("ms (log scale)")
    from matplotlib.patches import Patch

    used = [k for k in colors if any(k == s for _, segs, _ in bars for s, _, _ in segs)]
    handles = [Patch(facecolor=colors[k], edgecolor="#888", label=k) for k in used]
    ax_s.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.0, -0.04),
        ncol=min(5, len(handles)),
        fontsize=7.5,
        frameon=False,
    )
    fig.suptitle(
        "Figure-1 view: where the time goes per visual-embedding schema (region, grid, patch)"
        + ("; red labels: noisy (CV > 10%) or busy machine" if any(flags(r) for r in recs) else ""),
        fontsize=11,
        x=0.02,
        ha="left",
    )
    data = {
        "measured": _bar_data(bars),
        "paper": _bar_data(paper),
        "colours": used,
        "source_of_paper_bars": "ViLT paper (Kim et al., ICML 2021), Figure 1: P40 GPU, quoted",
    }
    return _save(fig, path, data)


def taxonomy(records: Sequence[Record], path: Path) -> Path | None:
    """VE / TE / MI shares per architecture with their ms, the class (measured and paper) and its margin."""
    recs = [r for r in records if r.get("taxonomy")]
    if not recs:
        return None
    fig = _figure(12.5, 1.9 + 0.6 * len(recs))
    gs = fig.add_gridspec(1, 2, width_ratios=[1.9, 1.0], wspace=0.02)
    ax, ax_txt = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    y = np.arange(len(recs))[::-1]
    names = {"VE": "visual embedder", "TE": "text embedder", "MI": "modality interaction"}
    for yi, r in zip(y, recs):
        t = r["taxonomy"]
        left = 0.0
        for g in ("VE", "TE", "MI"):
            share = 100 * t[f"{g}_share"]
            ax.barh(
                yi,
                share,
                left=left,
                color=GROUP_COLORS[g],
                height=0.65,
                label=f"{g}: {names[g]}" if yi == y[0] else None,
            )
            if share >= 11:
                ax.text(
                    left + share / 2,
                    yi,
                    f"{share:.0f}% ({fmt(t[f'{g}_ms'], 3)} ms)",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white",
                )
            left += share
        by, ratio = class_margin(t)
        close = is_close_call(t)
        paper = t.get("paper_class") or "-"
        mark = {True: "agrees", False: "DIFFERS", None: ""}[t.get("matches_paper")]
        small = ", ".join(f"{g} {fmt(t[f'{g}_ms'], 3)} ms" for g in ("VE", "TE", "MI") if 100 * t[f"{g}_share"] < 11)
        line = f"measured ({t['class']}) | paper ({paper}) {mark}"
        line2 = (f"decided by {by} = {ratio:.2f}x" + ("  CLOSE CALL" if close else "")) if by else "no class"
        ax_txt.text(
            0.01, yi + 0.14, line, va="center", fontsize=8, color=CLASS_COLORS.get(t["class"], "#333"), weight="bold"
        )
        ax_txt.text(
            0.01,
            yi - 0.2,
            line2 + (f"; {small}" if small else ""),
            va="center",
            fontsize=7.5,
            color="#b2182b" if close else "#333",
        )
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, len(recs) - 0.4)
    ax.set_yticks(y)
    ax.set_yticklabels([label(r) + _flagged(r) for r in recs], fontsize=8)
    ax.set_xlabel("share of VE + TE + MI median time (%), measured here; labels: share (median ms)")
    ax_txt.set_xlim(0, 1)
    ax_txt.set_ylim(-0.6, len(recs) - 0.4)
    ax_txt.axis("off")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14 - 0.25 / len(recs)), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        "Taxonomy view: VE / TE / MI per architecture.  (a) VE>TE>MI  (b) VE=TE>MI  (c) VE>MI>TE  "
        f"(d) MI>VE=TE.  A class decided by < {100 * CLOSE_MARGIN:.0f}% is a close call.",
        fontsize=10,
        x=0.02,
        ha="left",
    )
    rows = []
    for r in recs:
        t = r["taxonomy"]
        by, ratio = class_margin(t)
        rows.append(
            {
                "label": label(r),
                "key": r["key"],
                **{k: t[k] for k in ("class", "VE_ms", "TE_ms", "MI_ms", "VE_share", "TE_share", "MI_share")},
                "paper_class": t.get("paper_class"),
                "decided_by": by,
                "margin_ratio": ratio,
                "close_call": is_close_call(t),
            }
        )
    return _save(fig, path, {"architectures": rows, "close_margin": CLOSE_MARGIN})


def latency_accuracy(points: Sequence[dict[str, Any]], path: Path) -> Path | None:
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
            ax.errorbar(
                med,
                p["mean"],
                yerr=p["std"] if p["std"] is not None else None,
                xerr=[[med - q1], [q3 - med]],
                fmt=MARKERS[archs.index(p["arch"]) % len(MARKERS)],
                color=CLASS_COLORS.get(p["class"], "#7f7f7f"),
                markersize=8,
                capsize=3,
            )
        ax.set_xscale("log")
        ax.set_xlabel("latency: total median per forward (ms, log), measured here")
        ax.set_ylabel(f"{m} (mean over seeds)")
        ax.set_title(m, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker=MARKERS[i % len(MARKERS)], color="#444", linestyle="", label=a)
        for i, a in enumerate(archs)
    ]
    classes = sorted({p["class"] for p in pts}, key=str)
    handles += [
        Line2D(
            [],
            [],
            marker="s",
            color=CLASS_COLORS.get(c, "#7f7f7f"),
            linestyle="",
            label=f"class ({c})" if c else "class unknown",
        )
        for c in classes
    ]
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        title="marker = architecture\ncolour = measured class",
    )
    fig.suptitle("Latency versus accuracy (error bars: y = std over seeds, x = IQR of latency samples)")
    fig.tight_layout()
    return _save(fig, path)


def scaling(curves: Sequence[Curve], axis: str, path: Path) -> Path | None:
    """Latency and peak memory against one swept axis, one line per architecture / embedder."""
    cs = [c for c in curves if c.axis == axis]
    if not cs:
        return None
    fig = _figure(13, 4.8)
    ax_t, ax_m = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ticks: dict[float, str] = {}
    for i, c in enumerate(cs):
        med = np.asarray(c.medians())
        q = np.asarray(c.quartiles())
        stage, sl = fastest_stage(c)
        color = f"C{i % 10}"
        ax_t.errorbar(
            c.xs,
            med,
            yerr=[med - q[:, 0], q[:, 1] - med],
            marker=MARKERS[i % len(MARKERS)],
            color=color,
            capsize=3,
            label=f"{c.label}\n  fastest-growing stage: {stage} (+{sl:.3g} ms/{AXIS_UNITS[axis]})",
        )
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
