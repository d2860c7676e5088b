"""Facts read from result records, and the report's tables built from them.

Every number here comes from a record (``measured here``) or from a record's ``paper`` block, which
holds the registry's reference facts (``quoted from paper``); the two never share a column.
Tables are returned as (columns, rows) of formatted strings, with a full-precision twin for CSV.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

Record = Dict[str, Any]
Rows = List[List[Any]]

SCHEMAS = ("region", "grid", "patch")


# -- record facts ---------------------------------------------------------------------------------
def latency(records: Iterable[Record]) -> List[Record]:
    return [r for r in records if r["kind"] == "latency"]


def accuracy(records: Iterable[Record]) -> List[Record]:
    return [r for r in records if r["kind"] == "accuracy"]


def ve_stages(rec: Record) -> List[Dict[str, Any]]:
    """Leaf stages of the visual embedder (group VE), in the order they ran."""
    return [s for s in rec["stages"] if s["leaf"] and s["group"] == "VE"]


def short_stage(name: str) -> str:
    """``visual.rpn.nms`` -> ``rpn.nms`` (the component prefix is implied by the group)."""
    for prefix in ("visual.", "text.", "interaction.", "head."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def schema_of(rec: Record) -> Optional[str]:
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


def run_name(rec: Record) -> Optional[str]:
    """The run directory's name (``_run`` is set by the store's loader)."""
    return str(rec["_run"]).rstrip("/").split("/")[-1] if rec.get("_run") else None


def is_tiny(rec: Record) -> bool:
    return bool((rec.get("spec") or {}).get("tiny"))


def label(rec: Record) -> str:
    """A short configuration name: ``vilt-b32 (tiny) [64x96, L=16, B=1]``."""
    tiny = " (tiny)" if is_tiny(rec) else ""
    return f"{rec['arch']}{tiny} [{workload_label(rec)}]"


def quartiles(stats: Dict[str, Any]) -> Tuple[float, float]:
    """25th and 75th percentile of a stats block, from its raw samples."""
    q1, q3 = np.percentile(np.asarray(stats["samples_ms"], dtype=float), [25, 75])
    return float(q1), float(q3)


def group_ms(rec: Record, group: str) -> Optional[float]:
    g = (rec.get("groups") or {}).get(group)
    return None if g is None else float(g["median_ms"])


def peak_memory_mb(rec: Record) -> Optional[float]:
    mem = rec.get("memory") or {}
    if mem.get("cuda_peak_allocated_mb") is not None:
        return float(mem["cuda_peak_allocated_mb"])
    return None if mem.get("rss_peak_mb") is None else float(mem["rss_peak_mb"])


def memory_added_mb(rec: Record) -> Optional[float]:
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
        mem.get("method"), str(mem.get("method")))


def env_of(rec: Record) -> Dict[str, Any]:
    """The environment facts that decide whether two numbers are comparable."""
    e = rec.get("env") or {}
    alloc = {k: v for k, v in (e.get("allocator") or {}).items() if v}
    git = e.get("git") or {}
    commit = git.get("commit")
    return {
        "host": e.get("host"), "device": e.get("device"), "gpu": e.get("gpu"), "cpu": e.get("cpu"),
        "threads": (e.get("threads") or {}).get("intra_op"), "torch": e.get("torch"), "dtype": e.get("dtype"),
        "autocast": e.get("autocast"),
        "allocator": "; ".join(f"{k}={v}" for k, v in sorted(alloc.items())) or "default (none set)",
        "git": (commit[:10] + (" (dirty)" if git.get("dirty") else "")) if commit else "unknown",
    }


# -- number formatting ------------------------------------------------------------------------------
def fmt(x: Optional[float], digits: int = 4) -> str:
    """``digits`` significant digits, no exponent for everyday sizes; '-' for None."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    mag = int(np.floor(np.log10(abs(x))))
    if mag >= digits:
        return f"{x:,.0f}"
    if mag < -4:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(digits - 1 - mag, 0)}f}"


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


# -- tables -----------------------------------------------------------------------------------------
def environment_table(records: Sequence[Record]) -> Tuple[List[str], Rows]:
    cols = ["host", "device", "GPU", "CPU", "threads", "torch", "dtype", "allocator", "git commit", "record kind",
            "records"]
    seen: Dict[str, List[Any]] = {}
    for r in records:
        e = env_of(r)
        dev = e["device"] + (" (autocast)" if e["autocast"] else "") if e["device"] else None
        row = [e["host"], dev, e["gpu"], e["cpu"], e["threads"], e["torch"], e["dtype"], e["allocator"], e["git"],
               r["kind"]]
        k = json.dumps(row, default=str)
        if k in seen:
            seen[k][-1] += 1
        else:
            seen[k] = row + [1]
    return cols, list(seen.values())


SUMMARY_COLS = ["configuration", "run", "key", "component", "schema", "device", "total median ms", "total IQR ms", "n",
                "VE ms", "TE ms", "MI ms", "unaccounted ms", "params (M)", "GFLOPs (2 per multiply-add)",
                "peak memory MB", "class (measured)", "class (paper)"]


def summary_row(rec: Record) -> Tuple[List[Any], List[Any]]:
    """One summary row, formatted and raw."""
    tot = rec["total"]
    params = (rec.get("params") or {}).get("total")
    flops = (rec.get("flops") or {}).get("total")
    tax = rec.get("taxonomy") or {}
    raw = [label(rec), run_name(rec), rec["key"], rec.get("component"), schema_of(rec), rec["env"].get("device"),
           tot["median_ms"], tot["iqr_ms"], tot["n"], group_ms(rec, "VE"), group_ms(rec, "TE"), group_ms(rec, "MI"), rec.get("unaccounted_ms"),
           None if params is None else params / 1e6, None if flops is None else flops / 1e9, peak_memory_mb(rec),
           tax.get("class"), tax.get("paper_class") or (rec.get("paper") or {}).get("class")]
    shown = raw[:6] + [fmt(v) for v in raw[6:8]] + [raw[8]] + [fmt(v) for v in raw[9:16]] + raw[16:]
    return shown, raw


def summary_table(records: Sequence[Record]) -> Tuple[List[str], Rows, Rows]:
    rows = [summary_row(r) for r in records]
    return SUMMARY_COLS, [s for s, _ in rows], [r for _, r in rows]


STAGE_COLS = ["stage", "group", "median ms", "IQR ms", "p90 ms", "share of total", "CV", "noisy"]


def stage_table(rec: Record) -> Tuple[List[str], Rows, Rows]:
    """Leaf stages of one record, then ``unaccounted`` (total minus the leaf sum) and ``total``."""
    total = rec["total"]["median_ms"]
    shown, raw = [], []
    entries = [s for s in rec["stages"] if s["leaf"]]
    unacc = rec.get("unaccounted") or {}
    for name, group, st in ([(s["name"], s["group"], s) for s in entries]
                            + [("unaccounted", "other", {**unacc, "median_ms": rec.get("unaccounted_ms")}),
                               ("total", "total", rec["total"])]):
        med = st.get("median_ms")
        r = [name, group, med, st.get("iqr_ms"), st.get("p90_ms"), (med / total) if (med is not None and total) else None,
             st.get("cv"), st.get("noisy")]
        raw.append(r)
        shown.append([name, group, fmt(med), fmt(r[3]), fmt(r[4]), pct(r[5]), fmt(r[6], 2),
                      {True: "yes", False: "no"}.get(r[7], "-")])
    return STAGE_COLS, shown, raw


TAXONOMY_COLS = ["configuration", "VE ms", "TE ms", "MI ms", "VE share", "TE share", "MI share",
                 "class (measured)", "class (paper)", "agrees", "factor"]


def taxonomy_table(records: Sequence[Record]) -> Tuple[List[str], Rows, Rows]:
    shown, raw = [], []
    for r in records:
        t = r.get("taxonomy")
        if not t:
            continue
        row = [label(r), t["VE_ms"], t["TE_ms"], t["MI_ms"], t["VE_share"], t["TE_share"], t["MI_share"],
               t["class"], t.get("paper_class"), t.get("matches_paper"), t.get("factor")]
        raw.append(row)
        shown.append([row[0], *(fmt(v) for v in row[1:4]), *(pct(v) for v in row[4:7]), row[7], row[8] or "-",
                      {True: "yes", False: "no"}.get(row[9], "-"), row[10]])
    return TAXONOMY_COLS, shown, raw


def paper_table(records: Sequence[Record]) -> Tuple[List[str], Rows]:
    """The reference facts each record carries from its registry entry (quoted, never measured)."""
    rows, seen = [], set()
    for r in records:
        for k, v in sorted((r.get("paper") or {}).items()):
            if (r["arch"], k) in seen:
                continue
            seen.add((r["arch"], k))
            text = v if isinstance(v, str) else json.dumps(v)
            rows.append([r["arch"], k, text])
    return ["architecture / embedder", "fact", "value (quoted from paper or repository)"], rows


def metric_values(rec: Record) -> Dict[str, Dict[str, Any]]:
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


def latency_for_accuracy(arch: str, acc: Record, lat_records: Sequence[Record]) -> Optional[Record]:
    """The latency record an accuracy record is plotted against: same ``arch``, whole architecture.

    Several can match (sweeps, batch sizes); preference: same ``tiny`` setting as the accuracy run
    (when it says), batch size 1, then the first in run order.  The report names the one chosen.
    """
    cands = [r for r in lat_records if r["arch"] == arch and r.get("component", "arch") == "arch"]
    if not cands:
        return None
    acc_tiny = (acc.get("config") or {}).get("tiny")

    def rank(r: Record) -> Tuple[int, int]:
        tiny_ok = 0 if acc_tiny is None or bool(acc_tiny) == is_tiny(r) else 1
        return (tiny_ok, 0 if r["workload"].get("batch_size", 1) == 1 else 1)

    return min(cands, key=rank)


ACCURACY_COLS = ["architecture", "metric", "mean", "std over seeds", "seeds", "latency config (measured here)",
                 "total median ms", "class (measured)"]


def accuracy_points(records: Sequence[Record]) -> List[Dict[str, Any]]:
    """One point per (accuracy record, metric), joined on ``arch`` with a latency record (or None)."""
    lat = latency(records)
    pts = []
    for acc in accuracy(records):
        rec = latency_for_accuracy(acc["arch"], acc, lat)
        for metric, v in metric_values(acc).items():
            pts.append({"arch": acc["arch"], "metric": metric, **v, "latency": rec,
                        "class": ((rec or {}).get("taxonomy") or {}).get("class")})
    return pts


def accuracy_table(points: Sequence[Dict[str, Any]]) -> Tuple[List[str], Rows]:
    rows = []
    for p in points:
        rec = p["latency"]
        rows.append([p["arch"], p["metric"], fmt(p["mean"]), fmt(p["std"]), p["n"] or "-",
                     label(rec) if rec else "no latency record", fmt(rec["total"]["median_ms"]) if rec else "-",
                     p["class"] or "-"])
    return ACCURACY_COLS, rows
