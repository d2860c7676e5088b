"""The embedder latency table written by ``make bench`` (Markdown, CSV) from latency records.

Rows are embedders; columns the total median with IQR, parameters, FLOPs, tokens or regions produced,
the time relative to the patch projection measured *in the same run*, and the ViLT paper's Figure 1
figure (quoted, P40 GPU).  A second, long table lists every stage's median with IQR and its share.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Optional, Sequence

PATCH_REFERENCE = "vilt-b32-patch"


def paper_visual_ms(paper: Dict[str, Any]) -> Optional[str]:
    """The ViLT Figure 1 visual-embedding time for this preset, as quoted text, or None."""
    fig = paper.get("region_pipeline_ms_vilt_fig1")
    if isinstance(fig, dict):
        return f"~{fig.get('backbone_r101', 0) + fig.get('rpn_roialign_nms_roiheads', 0)}"
    for key in ("visual_time_ms", "time_ms"):
        if key in paper:
            return f"~{paper[key]}"
    return None


def _tokens(rec: Dict[str, Any]) -> str:
    """Tokens or regions produced: measured in the forward where the record has it, else as configured."""
    w = rec["workload"]
    for key in ("measured.regions", "regions", "visual_tokens", "image_tokens", "tokens", "text_len", "measured.tokens"):
        if key in w and w[key] is not None:
            v = w[key]
            if isinstance(v, list):  # one value per image
                v = v[0] if len(set(v)) == 1 else "/".join(map(str, v))
            return str(v)
    return "-"


def _input(rec: Dict[str, Any]) -> str:
    w = rec["workload"]
    if "image_size" in w:
        return "x".join(map(str, w["image_size"]))
    if "text_len" in w:
        return f"{w['text_len']} tokens"
    return "-"


def summary_rows(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    ref = next((r for r in records if r["arch"] == PATCH_REFERENCE), None)
    ref_ms = ref["total"]["median_ms"] if ref else None
    rows = []
    for r in records:
        t = r["total"]
        flops = (r.get("flops") or {}).get("total")
        rows.append({
            "embedder": r["arch"], "kind": r.get("component"), "input": _input(r), "tokens_or_regions": _tokens(r),
            "total_median_ms": round(t["median_ms"], 3), "total_iqr_ms": round(t["iqr_ms"], 3),
            "noisy": t.get("noisy"), "x_patch": round(t["median_ms"] / ref_ms, 1) if ref_ms else None,
            "params_M": round(r["params"]["total"] / 1e6, 2),
            "GFLOPs": round(flops / 1e9, 3) if flops is not None else None,
            "paper_ms": paper_visual_ms(r.get("paper") or {}),
            "threads": r["env"]["threads"]["intra_op"],
        })
    return rows


def stage_rows(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for r in records:
        total = r["total"]["median_ms"]
        for st in r["stages"]:
            if not st["leaf"]:
                continue
            rows.append({"embedder": r["arch"], "stage": st["name"], "group": st["group"],
                         "median_ms": round(st["median_ms"], 3), "iqr_ms": round(st["iqr_ms"], 3),
                         "p90_ms": round(st["p90_ms"], 3), "share": round(st["median_ms"] / total, 3) if total else None})
        rows.append({"embedder": r["arch"], "stage": "unaccounted", "group": "other",
                     "median_ms": round(r["unaccounted_ms"], 3), "iqr_ms": round(r["unaccounted"]["iqr_ms"], 3),
                     "p90_ms": round(r["unaccounted"]["p90_ms"], 3),
                     "share": round(r["unaccounted_ms"] / total, 3) if total else None})
    return rows


def _md(rows: List[Dict[str, Any]], columns: Sequence[str], headers: Sequence[str]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        out.append("| " + " | ".join("-" if row.get(c) is None else str(row[c]) for c in columns) + " |")
    return "\n".join(out) + "\n"


SUMMARY_COLS = ("embedder", "input", "tokens_or_regions", "total_median_ms", "total_iqr_ms", "x_patch",
                "params_M", "GFLOPs", "paper_ms")
SUMMARY_HEADERS = ("embedder", "input", "tokens / regions", "median ms", "IQR ms", "x patch (this run)",
                   "params M", "GFLOPs (2/MAC)", "paper ms (ViLT Fig. 1, P40 GPU)")


def markdown(records: Sequence[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> str:
    env = env or records[0]["env"]
    head = (f"# Embedder latency ({env['device']}, {env['threads']['intra_op']} threads, {env['cpu']}, "
            f"torch {env['torch']}, {env['date']})\n\n"
            "Measured in this run unless marked paper. Median and IQR over the timed iterations; FLOPs count 2 per "
            "multiply-add (ops without a formula are listed in each record's `flops.not_counted`). "
            "`x patch` is the total divided by the ViLT patch projection's total measured in the same run.\n\n")
    return (head + _md(summary_rows(records), SUMMARY_COLS, SUMMARY_HEADERS) + "\n## Stages (leaves)\n\n"
            + _md(stage_rows(records), ("embedder", "stage", "group", "median_ms", "iqr_ms", "p90_ms", "share"),
                  ("embedder", "stage", "group", "median ms", "IQR ms", "p90 ms", "share of total")))


def csv_text(records: Sequence[Dict[str, Any]]) -> str:
    """Wide CSV: one row per embedder, summary columns then one median/IQR column pair per stage."""
    summary = summary_rows(records)
    stages = stage_rows(records)
    names: List[str] = []
    for s in stages:
        if s["stage"] not in names:
            names.append(s["stage"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*SUMMARY_COLS, "threads", *(f"{n} {k}" for n in names for k in ("median_ms", "iqr_ms"))])
    for row in summary:
        per = {s["stage"]: s for s in stages if s["embedder"] == row["embedder"]}
        cells = []
        for n in names:
            cells += [per[n]["median_ms"], per[n]["iqr_ms"]] if n in per else ["", ""]
        w.writerow([*("" if row[c] is None else row[c] for c in SUMMARY_COLS), row["threads"], *cells])
    return buf.getvalue()
