"""The embedder latency tables written by ``make bench`` (Markdown, CSV) from latency records.

Rows are embedders; columns the median of the instrumented forward (stage markers on: the one the
stage breakdown adds up to) and of the forward without markers (what pytest-benchmark times, so its
JSON agrees with this column), IQR, parameters, FLOPs, tokens or regions produced, the time relative
to the patch projection measured *in the same run*, and the ViLT paper's Figure 1 figure (quoted,
P40 GPU).  A second, long table lists every leaf stage's median with IQR and its share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .table import Column, Table, pct, sig, text, yes_no

PATCH_REFERENCE = "vilt-b32-patch"
Record = dict[str, Any]


def paper_visual_ms(paper: dict[str, Any]) -> float | None:
    """The ViLT Figure 1 visual-embedding time for this preset (ms, quoted), or None."""
    fig = paper.get("region_pipeline_ms_vilt_fig1")
    if isinstance(fig, dict):
        return float(fig.get("backbone_r101", 0) + fig.get("rpn_roialign_nms_roiheads", 0))
    for key in ("visual_time_ms", "time_ms"):
        if isinstance(paper.get(key), (int, float)):
            return float(paper[key])
    return None


def _tokens(rec: Record) -> str | None:
    """Tokens or regions produced: measured in the forward where the record has it, else as configured."""
    w = rec["workload"]
    for key in (
        "measured.regions",
        "regions",
        "visual_tokens",
        "image_tokens",
        "tokens",
        "text_len",
        "measured.tokens",
    ):
        if key in w and w[key] is not None:
            v = w[key]
            if isinstance(v, list):  # one value per image
                v = v[0] if len(set(v)) == 1 else "/".join(map(str, v))
            return str(v)
    return None


def _hw(rec: Record) -> list[int | None]:
    size = rec["workload"].get("image_size")
    return [int(size[0]), int(size[1])] if isinstance(size, (list, tuple)) and len(size) == 2 else [None, None]


SUMMARY_COLUMNS = [
    text("embedder"),
    text("kind"),
    Column("image_height_px", "H px"),
    Column("image_width_px", "W px"),
    Column("text_len_tokens", "text tokens"),
    text("tokens_or_regions", "tokens / regions"),
    Column("median_ms", "median ms (stage markers)"),
    Column("iqr_ms", "IQR ms"),
    Column("no_marker_median_ms", "median ms (no markers, = pytest-benchmark)"),
    Column("noisy", fmt=yes_no),
    Column("x_patch", "x patch (this run)", fmt=lambda v: sig(v, 3)),
    Column("params_M", "params M"),
    Column("gflops", "GFLOPs (2/MAC)"),
    Column("paper_ms", "paper ms (ViLT Fig. 1, P40 GPU)", fmt=lambda v: "-" if v is None else f"~{sig(v, 3)}"),
    Column("threads"),
]

STAGE_COLUMNS = [
    text("embedder"),
    text("stage"),
    text("group"),
    Column("median_ms", "median ms"),
    Column("iqr_ms", "IQR ms"),
    Column("p90_ms", "p90 ms"),
    Column("share", "share of total", fmt=pct),
]


def summary_table(records: Sequence[Record]) -> Table:
    ref = next((r for r in records if r["arch"] == PATCH_REFERENCE), None)
    ref_ms = ref["total"]["median_ms"] if ref else None
    t = Table(SUMMARY_COLUMNS)
    for r in records:
        tot, flops = r["total"], (r.get("flops") or {}).get("total")
        t.add(
            r["arch"],
            r.get("component"),
            *_hw(r),
            r["workload"].get("text_len"),
            _tokens(r),
            tot["median_ms"],
            tot["iqr_ms"],
            (r.get("uninstrumented") or {}).get("median_ms"),
            tot.get("noisy"),
            tot["median_ms"] / ref_ms if ref_ms else None,
            r["params"]["total"] / 1e6,
            None if flops is None else flops / 1e9,
            paper_visual_ms(r.get("paper") or {}),
            r["env"]["threads"]["intra_op"],
        )
    return t


def stage_table(records: Sequence[Record]) -> Table:
    t = Table(STAGE_COLUMNS)
    for r in records:
        total = r["total"]["median_ms"]
        for st in r["stages"]:
            if st["leaf"]:
                t.add(
                    r["arch"],
                    st["name"],
                    st["group"],
                    st["median_ms"],
                    st["iqr_ms"],
                    st["p90_ms"],
                    st["median_ms"] / total if total else None,
                )
        un = r.get("unaccounted") or {}
        t.add(
            r["arch"],
            "unaccounted",
            "other",
            r["unaccounted_ms"],
            un.get("iqr_ms"),
            un.get("p90_ms"),
            r["unaccounted_ms"] / total if total else None,
        )
    return t


def markdown(records: Sequence[Record], env: dict[str, Any] | None = None) -> str:
    env = env or records[0]["env"]
    head = (
        f"# Embedder latency ({env['device']}, {env['threads']['intra_op']} threads, {env['cpu']}, "
        f"torch {env['torch']}, {env['date']})\n\n"
        "Measured in this run unless marked paper. Two medians per embedder, from iterations that alternate: "
        "`median ms (stage markers)` is the instrumented forward, which the stage rows below add up to; "
        "`median ms (no markers)` is the same forward without stage markers, the one pytest-benchmark times "
        "(its JSON, `pytest-benchmark.json`, holds that forward timed by its own clock). IQR of the "
        "instrumented forward. FLOPs count 2 per multiply-add (ops without a formula are listed in each "
        "record's `flops.not_counted`). `x patch` is the stage-marker median divided by the ViLT patch "
        "projection's, measured in the same run.\n\n"
    )
    return head + summary_table(records).to_markdown() + "\n## Stages (leaves)\n\n" + stage_table(records).to_markdown()


def csv_text(records: Sequence[Record]) -> str:
    """Tidy CSV, one row per embedder (units in the header, numbers only in numeric cells)."""
    return summary_table(records).to_csv()


def stage_csv_text(records: Sequence[Record]) -> str:
    """Tidy CSV, one row per embedder x leaf stage (plus ``unaccounted``)."""
    return stage_table(records).to_csv()
