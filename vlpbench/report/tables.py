"""Facts read from result records, and the report's tables built from them.

Every number here comes from a record (``measured here``) or from a record's ``paper`` block, which
holds the registry's reference facts (``quoted from paper``); the two never share a column.
Tables are :class:`vlpbench.report.table.Table` s of raw values; the report renders them (Markdown,
HTML) and writes each as CSV at full precision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .table import Column, Table, pct, sig, text, yes_no

Record = dict[str, Any]

SCHEMAS = ("region", "grid", "patch")


# -- record facts ---------------------------------------------------------------------------------
def latency(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r["kind"] == "latency"]


def accuracy(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r["kind"] == "accuracy"]


def ve_stages(rec: Record) -> list[dict[str, Any]]:
    """Leaf stages of the visual embedder (group VE), in the order they ran."""
    return [s for s in rec["stages"] if s["leaf"] and s["group"] == "VE"]


def short_stage(name: str) -> str:
    """``visual.rpn.nms`` -> ``rpn.nms`` (the component prefix is implied by the group)."""
    for prefix in ("visual.", "text.", "interaction.", "head."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def schema_of(rec: Record) -> str | None:
    """The visual-embedding schema (region, grid or patch) the record's visual embedder declared, else None.

    The harness records ``visual_schema`` from the embedder's ``output_spec().schema``, so a plugin's
    embedder lands in its schema whatever its stages are called.
    """
    schema = rec.get("visual_schema")
    return schema if schema in SCHEMAS else None


def workload_label(rec: Record) -> str:
    """``384x640 img, L=40, K=36, B=1`` from the record's workload (what the module reported)."""
    w = rec.get("workload", {})
    parts = []
    if w.get("image_size"):
        parts.append("x".join(str(v) for v in w["image_size"]))
    if w.get("text_len") is not None:
        parts.append(f"L={w['text_len']}")
    regions = w.get("regions", w.get("num_regions"))
    if regions is not None:
        parts.append(f"K={regions}")
    parts.append(f"B={w.get('batch_size', (rec.get('spec') or {}).get('batch_size', 1))}")
    return ", ".join(parts)


def run_name(rec: Record) -> str | None:
    """The run directory's name (``_run`` is set by the store's loader)."""
    return str(rec["_run"]).rstrip("/").split("/")[-1] if rec.get("_run") else None


def is_tiny(rec: Record) -> bool:
    return bool((rec.get("spec") or {}).get("tiny"))


def settings_label(rec: Record) -> str:
    """What departs from fp32 eager: `` bfloat16 autocast, tf32, cuda-graphs`` (empty for fp32 eager), so that
    rows of one model under two settings are told apart."""
    spec = rec.get("spec") or {}
    parts = []
    dtype = spec.get("dtype", "float32")
    if dtype != "float32":
        parts.append(f"{dtype} autocast" if spec.get("amp") else dtype)
    if spec.get("tf32"):
        parts.append("tf32")
    if spec.get("variant", "eager") != "eager":
        parts.append(str(spec["variant"]))
    return " " + ", ".join(parts) if parts else ""


def label(rec: Record) -> str:
    """A short configuration name: ``vilt-b32 (tiny) [64x96, L=16, B=1]``, then any departure from fp32 eager
    (``settings_label``)."""
    tiny = " (tiny)" if is_tiny(rec) else ""
    return f"{rec['arch']}{tiny} [{workload_label(rec)}]{settings_label(rec)}"


def quartiles(stats: dict[str, Any]) -> tuple[float, float]:
    """25th and 75th percentile of a stats block, from its raw samples."""
    q1, q3 = np.percentile(np.asarray(stats["samples_ms"], dtype=float), [25, 75])
    return float(q1), float(q3)


def group_ms(rec: Record, group: str) -> float | None:
    g = (rec.get("groups") or {}).get(group)
    return None if g is None else float(g["median_ms"])


def peak_memory_mb(rec: Record) -> float | None:
    mem = rec.get("memory") or {}
    if mem.get("cuda_peak_allocated_mb") is not None:
        return float(mem["cuda_peak_allocated_mb"])
    return None if mem.get("rss_peak_mb") is None else float(mem["rss_peak_mb"])


def memory_added_mb(rec: Record) -> float | None:
    """Memory the measurement added: CUDA peak allocated, or peak RSS minus the RSS before measuring."""
    mem = rec.get("memory") or {}
    if mem.get("cuda_peak_allocated_mb") is not None:
        return float(mem["cuda_peak_allocated_mb"])
    if mem.get("rss_peak_mb") is None or mem.get("rss_before_mb") is None:
        return None
    return float(mem["rss_peak_mb"]) - float(mem["rss_before_mb"])


def memory_label(rec: Record) -> str:
    mem = rec.get("memory") or {}
    if mem.get("cuda_peak_allocated_mb") is not None:
        return "CUDA peak allocated"
    return {"ru_maxrss": "peak RSS of its own process", "sampled": "sampled RSS peak, shared process"}.get(
        mem.get("method"), str(mem.get("method"))
    )


def env_of(rec: Record) -> dict[str, Any]:
    """The environment facts that decide whether two numbers are comparable."""
    e = rec.get("env") or {}
    alloc = {k: v for k, v in (e.get("allocator") or {}).items() if v}
    git = e.get("git") or {}
    commit = git.get("commit")
    return {
        "host": e.get("host"),
        "device": e.get("device"),
        "gpu": e.get("gpu"),
        "cpu": e.get("cpu"),
        "threads": (e.get("threads") or {}).get("intra_op"),
        "torch": e.get("torch"),
        "dtype": e.get("dtype"),
        "autocast": e.get("autocast"),
        "allocator": "; ".join(f"{k}={v}" for k, v in sorted(alloc.items())) or "default (none set)",
        "git": (commit[:10] + (" (dirty)" if git.get("dirty") else "")) if commit else "unknown",
    }


# -- number formatting (the table model's, re-exported for the figures and the report text) ---------------
fmt = sig


# -- the taxonomy's margin ------------------------------------------------------------------------
CLOSE_MARGIN = 0.10  # a class decided by less than 10% flips with ordinary run-to-run drift on a shared machine


def class_margin(tax: dict[str, Any]) -> tuple[str | None, float | None]:
    """The comparison that decided the class and its ratio (> 1; the class flips when it falls to 1).

    Each class of the rule is a conjunction of comparisons; the closest of them is the margin, e.g.
    (d) with VE 99 / MI 100 is decided by ``MI / max(VE, TE)`` = 1.01.  None for ``unclassified``.
    """
    ve, te, mi, f = (float(tax[k]) for k in ("VE_ms", "TE_ms", "MI_ms", "factor"))

    def r(a: float, b: float) -> float:
        return a / max(b, 1e-12)

    lo, hi = min(ve, te), max(ve, te)
    cands = {
        "d": [("MI / max(VE, TE)", r(mi, hi))],
        "c": [("VE / MI", r(ve, mi)), ("MI / TE", r(mi, te))],
        "b": [("min(VE, TE) / MI", r(lo, mi)), ("factor x min(VE, TE) / max(VE, TE)", r(f * lo, hi))],
        "a": [("TE / MI", r(te, mi)), ("VE / (factor x TE)", r(ve, f * te))],
    }.get(tax.get("class"))
    if not cands:
        return None, None
    return min(cands, key=lambda c: c[1])


def is_close_call(tax: dict[str, Any]) -> bool:
    _, ratio = class_margin(tax)
    return ratio is not None and ratio < 1 + CLOSE_MARGIN


def busy(rec: Record) -> bool | None:
    """The environment's ``busy`` flag (load above the thread count while measuring), if the record has one."""
    return (rec.get("env") or {}).get("busy")


def flags(rec: Record) -> str:
    """``noisy``, ``busy`` or both, for labels; empty when neither holds."""
    out = [name for name, on in (("noisy", rec["total"].get("noisy")), ("busy", busy(rec))) if on]
    return ", ".join(out)


# -- tables -----------------------------------------------------------------------------------------
def environment_table(records: Sequence[Record]) -> Table:
    t = Table(
        [
            text("host"),
            text("device"),
            text("gpu", "GPU"),
            text("cpu", "CPU"),
            Column("threads"),
            text("torch"),
            text("dtype"),
            text("allocator"),
            text("git_commit", "git commit"),
            text("record_kind", "record kind"),
            Column("records"),
        ]
    )
    seen: dict[str, list[Any]] = {}
    for r in records:
        e = env_of(r)
        dev = e["device"] + (" (autocast)" if e["autocast"] else "") if e["device"] else None
        row = [
            e["host"],
            dev,
            e["gpu"],
            e["cpu"],
            e["threads"],
            e["torch"],
            e["dtype"],
            e["allocator"],
            e["git"],
            r["kind"],
        ]
        k = json.dumps(row, default=str)
        if k in seen:
            seen[k][-1] += 1
        else:
            seen[k] = row + [1]
    t.rows.extend(seen.values())
    return t


SUMMARY_COLUMNS = [
    text("configuration"),
    text("run"),
    text("key"),
    text("component"),
    text("schema"),
    text("device"),
    Column("total_median_ms", "total median ms"),
    Column("total_iqr_ms", "total IQR ms"),
    Column("n"),
    Column("VE_ms", "VE ms"),
    Column("TE_ms", "TE ms"),
    Column("MI_ms", "MI ms"),
    Column("unaccounted_ms", "unaccounted ms"),
    Column("params_M", "params M"),
    Column("gflops", "GFLOPs (2 per multiply-add)"),
    Column("peak_memory_MB", "peak memory MB"),
    Column("noisy", fmt=yes_no),
    Column("busy", fmt=yes_no),
    text("class_measured", "class (measured)"),
    text("class_paper", "class (paper)"),
]


def summary_cells(rec: Record) -> list[Any]:
    tot = rec["total"]
    params = (rec.get("params") or {}).get("total")
    flops = (rec.get("flops") or {}).get("total")
    tax = rec.get("taxonomy") or {}
    return [
        label(rec),
        run_name(rec),
        rec["key"],
        rec.get("component"),
        schema_of(rec),
        rec["env"].get("device"),
        tot["median_ms"],
        tot["iqr_ms"],
        tot["n"],
        group_ms(rec, "VE"),
        group_ms(rec, "TE"),
        group_ms(rec, "MI"),
        rec.get("unaccounted_ms"),
        None if params is None else params / 1e6,
        None if flops is None else flops / 1e9,
        peak_memory_mb(rec),
        tot.get("noisy"),
        busy(rec),
        tax.get("class"),
        tax.get("paper_class") or (rec.get("paper") or {}).get("class"),
    ]


def summary_table(records: Sequence[Record]) -> Table:
    return Table(SUMMARY_COLUMNS, [summary_cells(r) for r in records])


STAGE_COLUMNS = [
    text("stage"),
    text("group"),
    Column("median_ms", "median ms"),
    Column("iqr_ms", "IQR ms"),
    Column("p90_ms", "p90 ms"),
    Column("share_of_total", "share of total", fmt=pct),
    Column("cv", "CV", fmt=lambda v: sig(v, 2)),
    Column("noisy", fmt=yes_no),
]


def stage_table(rec: Record) -> Table:
    """Leaf stages of one record, then ``unaccounted`` (total minus the leaf sum) and ``total``."""
    total = rec["total"]["median_ms"]
    t = Table(STAGE_COLUMNS)
    unacc = rec.get("unaccounted") or {}
    for name, group, st in [(s["name"], s["group"], s) for s in rec["stages"] if s["leaf"]] + [
        ("unaccounted", "other", {**unacc, "median_ms": rec.get("unaccounted_ms")}),
        ("total", "total", rec["total"]),
    ]:
        med = st.get("median_ms")
        t.add(
            name,
            group,
            med,
            st.get("iqr_ms"),
            st.get("p90_ms"),
            (med / total) if (med is not None and total) else None,
            st.get("cv"),
            st.get("noisy"),
        )
    return t


TAXONOMY_COLUMNS = [
    text("configuration"),
    Column("VE_ms", "VE ms"),
    Column("TE_ms", "TE ms"),
    Column("MI_ms", "MI ms"),
    Column("VE_share", "VE share", fmt=pct),
    Column("TE_share", "TE share", fmt=pct),
    Column("MI_share", "MI share", fmt=pct),
    text("class_measured", "class (measured)"),
    text("class_paper", "class (paper)"),
    Column("agrees", fmt=yes_no),
    Column("factor", fmt=lambda v: f"{v:g}"),
    text("decided_by", "decided by"),
    Column("margin_ratio", "margin (ratio)", fmt=lambda v: sig(v, 3)),
    Column("close_call", f"close call (< {100 * CLOSE_MARGIN:.0f}%)", fmt=yes_no),
]


def taxonomy_table(records: Sequence[Record]) -> Table:
    t = Table(TAXONOMY_COLUMNS)
    for r in records:
        x = r.get("taxonomy")
        if not x:
            continue
        by, ratio = class_margin(x)
        t.add(
            label(r),
            x["VE_ms"],
            x["TE_ms"],
            x["MI_ms"],
            x["VE_share"],
            x["TE_share"],
            x["MI_share"],
            x["class"],
            x.get("paper_class"),
            x.get("matches_paper"),
            x.get("factor"),
            by,
            ratio,
            is_close_call(x),
        )
    return t


def paper_table(records: Sequence[Record]) -> Table:
    """The reference facts each record carries from its registry entry (quoted, never measured)."""
    t = Table(
        [
            text("name", "architecture / embedder"),
            text("fact"),
            text("value", "value (quoted from paper or repository)"),
        ]
    )
    seen = set()
    for r in records:
        for k, v in sorted((r.get("paper") or {}).items()):
            if (r["arch"], k) in seen:
                continue
            seen.add((r["arch"], k))
            t.add(r["arch"], k, v if isinstance(v, str) else json.dumps(v))
    return t


def metric_values(rec: Record) -> dict[str, dict[str, Any]]:
    """Accuracy metrics as {name: {"mean", "std", "n"}}, from {"mean", "std", "seeds"} blocks or plain floats.

    Integers (example counts such as ``n``) and NaN means (a subset with no examples) are not metrics.
    """
    out = {}
    for name, v in (rec.get("metrics") or {}).items():
        if isinstance(v, dict) and isinstance(v.get("mean"), (int, float)) and np.isfinite(v["mean"]):
            seeds = v.get("seeds") or []
            std = v.get("std")
            if std is None and len(seeds) > 1:
                std = float(np.std(np.asarray(seeds, dtype=float), ddof=1))
            out[name] = {"mean": float(v["mean"]), "std": None if std is None else float(std), "n": len(seeds) or None}
        elif isinstance(v, float) and np.isfinite(v):
            out[name] = {"mean": float(v), "std": None, "n": None}
    return out


def latency_for_accuracy(arch: str, acc: Record, lat_records: Sequence[Record]) -> Record | None:
    """The latency record an accuracy record is plotted against: same ``arch``, whole architecture.

    Several can match (sweeps, batch sizes); preference: same ``tiny`` setting as the accuracy run
    (when it says), batch size 1, then the first in run order.  The report names the one chosen.
    """
    cands = [r for r in lat_records if r["arch"] == arch and r.get("component", "arch") == "arch"]
    if not cands:
        return None
    acc_tiny = (acc.get("config") or {}).get("tiny")

    def rank(r: Record) -> tuple[int, int]:
        tiny_ok = 0 if acc_tiny is None or bool(acc_tiny) == is_tiny(r) else 1
        return (tiny_ok, 0 if r["workload"].get("batch_size", 1) == 1 else 1)

    return min(cands, key=rank)


ACCURACY_COLUMNS = [
    text("architecture"),
    text("metric"),
    Column("mean"),
    Column("std", "std over seeds"),
    Column("seeds"),
    text("latency_config", "latency config (measured here)"),
    Column("total_median_ms", "total median ms"),
    text("class_measured", "class (measured)"),
]


def accuracy_points(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One point per (accuracy record, metric), joined on ``arch`` with a latency record (or None)."""
    lat = latency(records)
    pts = []
    for acc in accuracy(records):
        rec = latency_for_accuracy(acc["arch"], acc, lat)
        for metric, v in metric_values(acc).items():
            pts.append(
                {
                    "arch": acc["arch"],
                    "metric": metric,
                    **v,
                    "latency": rec,
                    "class": ((rec or {}).get("taxonomy") or {}).get("class"),
                }
            )
    return pts


def accuracy_table(points: Sequence[dict[str, Any]]) -> Table:
    t = Table(ACCURACY_COLUMNS)
    for p in points:
        rec = p["latency"]
        t.add(
            p["arch"],
            p["metric"],
            p["mean"],
            p["std"],
            p["n"],
            label(rec) if rec else "no latency record",
            rec["total"]["median_ms"] if rec else None,
            p["class"],
        )
    return t
