"""Side-by-side breakdown of measured architectures (``vlpbench compare``).

Reads latency records (the results-store schema) and lays them out one column per architecture:
parameters, FLOPs, every stage's median with IQR grouped under VE / TE / MI / head, total, throughput,
peak memory, VE / TE / MI shares, measured and paper class, and the paper's time.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Dict, List, Sequence, Tuple

from .errors import VlpbenchError
from .stages import GROUPS

FORMATS = ("table", "markdown", "csv", "json")


def _fmt_ms(st: Dict[str, Any]) -> str:
    return f"{st['median_ms']:.2f} ±{st['iqr_ms']:.2f}" + (" (noisy)" if st.get("noisy") else "")


def _num(x: float | None, unit: str, scale: float) -> str:
    return "-" if x is None else f"{x / scale:.2f} {unit}"


def _cell(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, list) else str(v)


def comparison_rows(records: Sequence[Dict[str, Any]]) -> Tuple[List[str], List[Tuple[str, List[str]]]]:
    """Column headers and (row label, cells) pairs; stage rows are the union of leaf stages in order."""
    if not records:
        raise VlpbenchError("no latency records to compare")
    headers = [r["arch"] for r in records]
    rows: List[Tuple[str, List[str]]] = []

    def add(label: str, fn) -> None:
        rows.append((label, [fn(r) for r in records]))

    keys: List[str] = []
    for r in records:
        keys += [k for k in r["workload"] if k not in keys]
    for k in keys:
        add(k.replace("measured.", "measured "), lambda r, k=k: _cell(r["workload"].get(k, "-")))
    add("params", lambda r: _num(r["params"]["total"], "M", 1e6))
    add("FLOPs (2/MAC)", lambda r: _num((r.get("flops") or {}).get("total"), "G", 1e9))
    for group in GROUPS:
        names: List[str] = []
        for r in records:
            for st in r["stages"]:
                if st["leaf"] and st["group"] == group and st["name"] not in names:
                    names.append(st["name"])
        if not names:
            continue
        add(f"[{group}] total ms", lambda r, g=group: _fmt_ms(r["groups"][g]) if g in r.get("groups", {}) else "-")
        for name in names:
            def cell(r, n=name):
                st = next((s for s in r["stages"] if s["name"] == n), None)
                return _fmt_ms(st) if st else "-"
            add(f"  {name} ms", cell)
    add("unaccounted ms", lambda r: f"{r['unaccounted_ms']:.2f}")
    add("total ms (instrumented)", lambda r: _fmt_ms(r["total"]))
    add("total ms (no markers)", lambda r: _fmt_ms(r["uninstrumented"]) if "uninstrumented" in r else "-")
    add("throughput /s", lambda r: f"{r['workload']['batch_size'] * 1e3 / r['total']['median_ms']:.2f}")
    add("peak RSS MB", lambda r: f"{r['memory']['rss_peak_mb']:.0f} ({r['memory']['method']})")
    if any("cuda_peak_allocated_mb" in r["memory"] for r in records):
        add("peak CUDA MB", lambda r: f"{r['memory'].get('cuda_peak_allocated_mb', '-')}")
    add("VE / TE / MI share", lambda r: "/".join(f"{100 * r['taxonomy'][k]:.0f}%" for k in ("VE_share", "TE_share", "MI_share"))
        if "taxonomy" in r else "-")
    add("class measured", lambda r: r.get("taxonomy", {}).get("class", "-"))
    add("class paper", lambda r: r.get("paper", {}).get("class") or "-")
    add("time paper ms", lambda r: f"~{r['paper']['time_ms']} (paper, P40 GPU)" if r.get("paper", {}).get("time_ms") else "-")
    add("threads / device", lambda r: f"{r['env']['threads']['intra_op']} / {r['env']['device']}")
    return headers, rows


def format_comparison(records: Sequence[Dict[str, Any]], fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise VlpbenchError(f"invalid format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(list(records), indent=1)
    headers, rows = comparison_rows(records)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["row", *headers])
        for label, cells in rows:
            w.writerow([label.strip(), *cells])
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
        lines += ["| " + label.replace("  ", "&nbsp;&nbsp;") + " | " + " | ".join(cells) + " |" for label, cells in rows]
        return "\n".join(lines) + "\n"
    width0 = max(len(label) for label, _ in rows)
    widths = [max(len(h), *(len(c[i]) for _, c in rows)) for i, h in enumerate(headers)]
    out = [" " * width0 + "  " + "  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    out += [label.ljust(width0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)) for label, cells in rows]
    out.append("")
    out.append("Medians ±IQR over the timed iterations; FLOPs count 2 per multiply-add (see each record's "
               "flops.not_counted); paper times are quoted, not measured here.")
    return "\n".join(out) + "\n"
