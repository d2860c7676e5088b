"""Side-by-side breakdown of measured architectures (``vlpbench compare``), for people and for programs.

Three tables, all built with :mod:`vlpbench.report.table` from latency records:

- :func:`stage_table`: long and tidy, one row per record x stage (every stage, then ``unaccounted`` and
  ``total``), numeric columns with the unit in the header (``median_ms``), never a unit in a cell;
- :func:`summary_table`: one row per configuration in the spirit of timm's ``benchmark.py`` (median ms,
  samples/s, params, GFLOPs, peak memory, VE / TE / MI and the class);
- :func:`side_by_side`: one column per architecture with every stage's median and IQR grouped under
  VE / TE / MI / head, for the terminal (``--format table``) and Markdown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from vlpbench.errors import VlpbenchError
from vlpbench.stages import GROUPS

from .table import Column, Table, pct, plain, sig, text, yes_no

FORMATS = ("table", "markdown", "csv", "csv-summary", "json")
Record = dict[str, Any]

STAGE_COLUMNS = [
    text("arch"),
    text("key"),
    text("component"),
    text("stage"),
    text("group"),
    Column("leaf", fmt=yes_no),
    Column("n"),
    Column("median_ms", "median ms"),
    Column("iqr_ms", "IQR ms"),
    Column("p95_ms", "p95 ms"),
    Column("ci95_low_ms", "CI95 low ms"),
    Column("ci95_high_ms", "CI95 high ms"),
    Column("cv", "CV"),
    Column("noisy", fmt=yes_no),
    Column("share_of_total", "share of total", fmt=pct),
]

SUMMARY_COLUMNS = [
    text("arch"),
    text("key"),
    text("component"),
    text("device"),
    text("dtype"),
    Column("threads"),
    Column("batch_size", "batch"),
    Column("image_height_px", "image height px"),
    Column("image_width_px", "image width px"),
    Column("text_len_tokens", "text tokens"),
    Column("n", "timed iterations"),
    Column("median_ms", "median ms"),
    Column("iqr_ms", "IQR ms"),
    Column("ci95_low_ms", "CI95 low ms"),
    Column("ci95_high_ms", "CI95 high ms"),
    Column("noisy", fmt=yes_no),
    Column("busy", fmt=yes_no),
    Column("uninstrumented_median_ms", "no-marker median ms"),
    Column("samples_per_s", "samples/s"),
    Column("params_M", "params M"),
    Column("gflops", "GFLOPs (2/MAC)"),
    Column("peak_rss_MB", "peak RSS MB"),
    text("memory_method", "memory method"),
    Column("peak_cuda_allocated_MB", "peak CUDA allocated MB"),
    Column("VE_ms", "VE ms"),
    Column("TE_ms", "TE ms"),
    Column("MI_ms", "MI ms"),
    text("class_measured", "class measured"),
    text("class_paper", "class paper"),
    Column("paper_time_ms", "paper time ms (P40 GPU, quoted)"),
]


def _need(records: Sequence[Record]) -> None:
    if not records:
        raise VlpbenchError("no latency records to compare")


def _ci(st: dict[str, Any]) -> list[float | None]:
    ci = st.get("ci95_ms") or [None, None]
    return [ci[0], ci[1]]


def _stage_cells(
    rec: Record, name: str, group: str, leaf: bool | None, st: dict[str, Any], median: float | None = None
) -> list[Any]:
    total = rec["total"]["median_ms"]
    med = st.get("median_ms") if median is None else median
    return [
        rec["arch"],
        rec["key"],
        rec.get("component"),
        name,
        group,
        leaf,
        st.get("n"),
        med,
        st.get("iqr_ms"),
        st.get("p95_ms"),
        *_ci(st),
        st.get("cv"),
        st.get("noisy"),
        (med / total) if (med is not None and total) else None,
    ]


def stage_table(records: Sequence[Record]) -> Table:
    """Every stage of every record, then its ``unaccounted`` (total minus leaf sum) and ``total`` rows."""
    _need(records)
    t = Table(STAGE_COLUMNS)
    for r in records:
        for s in r["stages"]:
            t.add(*_stage_cells(r, s["name"], s["group"], s["leaf"], s))
        t.add(*_stage_cells(r, "unaccounted", "other", True, r.get("unaccounted") or {}, r.get("unaccounted_ms")))
        t.add(*_stage_cells(r, "total", "total", False, r["total"]))
    return t


def _image_hw(rec: Record) -> list[int | None]:
    size = rec["workload"].get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return [int(size[0]), int(size[1])]
    return [None, None]


def paper_time_ms(rec: Record) -> float | None:
    v = (rec.get("paper") or {}).get("time_ms")
    return float(v) if isinstance(v, (int, float)) else None


def samples_per_s(rec: Record) -> float | None:
    """Throughput from the forward without stage markers when measured (what a user deploys), else instrumented."""
    ms = (rec.get("uninstrumented") or {}).get("median_ms") or rec["total"]["median_ms"]
    return rec["workload"].get("batch_size", 1) * 1e3 / ms if ms else None


def summary_cells(rec: Record) -> list[Any]:
    tot, w, env, mem = rec["total"], rec["workload"], rec.get("env") or {}, rec.get("memory") or {}
    flops = (rec.get("flops") or {}).get("total")
    groups = rec.get("groups") or {}
    tax = rec.get("taxonomy") or {}
    plain_ms = (rec.get("uninstrumented") or {}).get("median_ms")
    return [
        rec["arch"],
        rec["key"],
        rec.get("component"),
        env.get("device"),
        env.get("dtype"),
        (env.get("threads") or {}).get("intra_op"),
        w.get("batch_size"),
        *_image_hw(rec),
        w.get("text_len"),
        tot.get("n"),
        tot["median_ms"],
        tot.get("iqr_ms"),
        *_ci(tot),
        tot.get("noisy"),
        env.get("busy"),
        plain_ms,
        samples_per_s(rec),
        (rec.get("params") or {}).get("total", 0) / 1e6,
        None if flops is None else flops / 1e9,
        mem.get("rss_peak_mb"),
        mem.get("method"),
        mem.get("cuda_peak_allocated_mb"),
        *((groups.get(g) or {}).get("median_ms") for g in ("VE", "TE", "MI")),
        tax.get("class"),
        tax.get("paper_class") or (rec.get("paper") or {}).get("class"),
        paper_time_ms(rec),
    ]


def summary_table(records: Sequence[Record]) -> Table:
    """One row per configuration (timm benchmark.py style); samples/s from the no-marker median when measured."""
    _need(records)
    return Table(SUMMARY_COLUMNS, [summary_cells(r) for r in records])


# -- the side-by-side view (people) ----------------------------------------------------------------
def _ms(st: dict[str, Any] | None) -> str:
    if not st:
        return "-"
    return f"{sig(st['median_ms'])} ±{sig(st['iqr_ms'], 3)}" + (" noisy" if st.get("noisy") else "")


def _group_names(records: Sequence[Record], group: str) -> list[str]:
    names: list[str] = []
    for r in records:
        names += [s["name"] for s in r["stages"] if s["leaf"] and s["group"] == group and s["name"] not in names]
    return names


def side_by_side(records: Sequence[Record]) -> Table:
    """One column per architecture; rows are workload, size, every leaf stage (median ±IQR) and the class."""
    _need(records)
    cols = [text("quantity", " ")] + [Column(f"c{i}", r["arch"], plain, numeric=True) for i, r in enumerate(records)]
    t = Table(
        cols,
        notes="Medians ±IQR over the timed iterations (ms); FLOPs count 2 per multiply-add (see each "
        "record's flops.not_counted); paper times are quoted (P40 GPU), not measured here. "
        "--format csv gives the same numbers as a tidy table.",
    )

    def row(label: str, fn) -> None:
        t.add(label, *(fn(r) for r in records))

    keys: list[str] = []
    for r in records:
        keys += [k for k in r["workload"] if k not in keys]
    for k in keys:
        row(k.replace("measured.", "measured "), lambda r, k=k: plain(r["workload"].get(k)))
    row("params M", lambda r: sig(r["params"]["total"] / 1e6))
    row("GFLOPs (2/MAC)", lambda r: sig(None if not r.get("flops") else r["flops"]["total"] / 1e9))
    for group in GROUPS:
        names = _group_names(records, group)
        if not names:
            continue
        row(f"[{group}] total ms", lambda r, g=group: _ms((r.get("groups") or {}).get(g)))
        for name in names:
            row(f"  {name} ms", lambda r, n=name: _ms(next((s for s in r["stages"] if s["name"] == n), None)))
    row("unaccounted ms", lambda r: sig(r["unaccounted_ms"]))
    row("total ms (instrumented)", lambda r: _ms(r["total"]))
    row("total ms (no markers)", lambda r: _ms(r.get("uninstrumented")))
    row("samples/s", lambda r: sig(samples_per_s(r)))
    row("peak RSS MB", lambda r: f"{sig(r['memory']['rss_peak_mb'])} ({r['memory']['method']})")
    if any("cuda_peak_allocated_mb" in r["memory"] for r in records):
        row("peak CUDA MB", lambda r: sig(r["memory"].get("cuda_peak_allocated_mb")))
    row(
        "VE / TE / MI share",
        lambda r: (
            " / ".join(pct(r["taxonomy"][f"{g}_share"]) for g in ("VE", "TE", "MI")) if r.get("taxonomy") else "-"
        ),
    )
    row("class measured", lambda r: (r.get("taxonomy") or {}).get("class", "-"))
    row("class paper", lambda r: (r.get("paper") or {}).get("class") or "-")
    row("time paper ms (P40 GPU)", lambda r: f"~{sig(paper_time_ms(r))}" if paper_time_ms(r) else "-")
    row("threads / device", lambda r: f"{r['env']['threads']['intra_op']} / {r['env']['device']}")
    row("machine busy", lambda r: yes_no(r["env"].get("busy")))
    return t


def format_comparison(records: Sequence[Record], fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise VlpbenchError(f"invalid format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(list(records), indent=1)
    if fmt == "csv":
        return stage_table(records).to_csv()
    if fmt == "csv-summary":
        return summary_table(records).to_csv()
    view = side_by_side(records)
    return view.to_markdown() if fmt == "markdown" else view.to_text()


def write_csvs(records: Sequence[Record], folder: Union[str, Path]) -> list[Path]:
    """Write ``stages.csv`` and ``summary.csv`` beside the records (atomically); return their paths."""
    from vlpbench.store import atomic_write_text

    folder = Path(folder)
    return [
        atomic_write_text(folder / "stages.csv", stage_table(records).to_csv()),
        atomic_write_text(folder / "summary.csv", summary_table(records).to_csv()),
    ]
