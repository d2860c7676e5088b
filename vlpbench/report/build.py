"""Build a self-contained report folder from run directories.

    <out>/report.md      the report (Markdown)
    <out>/report.html    the same blocks rendered as a static page
    <out>/figures/*.png  figures (matplotlib, Agg canvas)
    <out>/tables/*.csv   every table at full precision

Order: where the numbers come from (environment, measured vs quoted), the summary, the Figure-1
view, the taxonomy view, latency versus accuracy, scaling curves, then one per-stage table per
configuration and the quoted reference facts.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from vlpbench.errors import VlpbenchError
from vlpbench.store import atomic_write_text, load_records

from . import accuracy_view, figures, tables
from .doc import Bullets, Document, Heading, Image, Para, TableBlock
from .sweep import AXES, AXIS_UNITS, curves, slope, stage_slopes
from .table import Column, Table, text, yes_no

PathLike = Union[str, Path]
DEFAULT_OUT = Path("reports") / "report"
# the summary columns the page shows (the CSV has them all)
SUMMARY_SHOWN = (
    "configuration",
    "device",
    "total_median_ms",
    "total_iqr_ms",
    "n",
    "VE_ms",
    "TE_ms",
    "MI_ms",
    "unaccounted_ms",
    "params_M",
    "gflops",
    "peak_memory_MB",
    "noisy",
    "busy",
    "class_measured",
    "class_paper",
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "x"


class _Writer:
    """Writes each table's CSV twin under ``tables/`` and returns the block that shows it (optionally narrower)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.names: set = set()

    def table(
        self, name: str, table: Table, caption: str | None = None, shown: Sequence[str] | None = None
    ) -> TableBlock:
        base, n = _slug(name), 1
        fname = base
        while fname in self.names:
            n += 1
            fname = f"{base}-{n}"
        self.names.add(fname)
        rel = f"tables/{fname}.csv"
        atomic_write_text(self.out / rel, table.to_csv())
        view = table.view(shown) if shown else table
        if caption:
            view.caption = caption
        return TableBlock(view, rel)


def build_report(run_dirs: Sequence[PathLike], out: PathLike | None = None) -> Path:
    """Write the report for ``run_dirs`` into ``out`` (default ``reports/report/<UTC stamp>``); return report.md."""
    if not run_dirs:
        raise VlpbenchError("no run directory given; accepted: one or more reports/runs/<run> directories")
    records = load_records(list(run_dirs))
    lat = tables.latency(records)
    if out is None:
        out = DEFAULT_OUT / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VlpbenchError(f"report folder {str(out)!r} is a file; accepted: a directory (new or a previous report)")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    w = _Writer(out)
    doc = Document("vlpbench report")
    multi = len(run_dirs) > 1
    doc.add(
        Para(
            "Runs: " + ", ".join(f"`{d}`" for d in run_dirs) + f" ({len(lat)} latency and "
            f"{len(records) - len(lat)} accuracy records)."
        )
    )
    doc.add(
        Bullets(
            [
                "**measured here**: every number in a table or solid mark comes from the result records listed above, "
                "on the machine described in the environment table (random weights, see each record's config).",
                "**quoted from paper**: numbers labelled `paper` (hatched bars, the `class (paper)` column and the "
                "reference-facts table) are copied from the ViLT paper or the named repository, measured elsewhere "
                "(Figure 1 of the paper: P40 GPU, full-size models); they are context, not results of this suite.",
            ]
        )
    )

    doc.add(Heading("Environment"))
    doc.add(
        w.table(
            "environment",
            tables.environment_table(records),
            caption="where the measured numbers were taken (one row per distinct environment)",
        )
    )

    cs = curves(records, multi_run=multi)
    in_curve = {id(r) for c in cs for r in c.records}
    if lat:
        doc.add(Heading("Summary"))
        doc.add(
            w.table(
                "summary",
                tables.summary_table(lat),
                shown=SUMMARY_SHOWN,
                caption="measured here: medians over the timed iterations; FLOPs are 2 per multiply-add, "
                "as counted by the harness (see each record's flops.not_counted); run, key and schema are "
                "in the CSV",
            )
        )

    doc.add(Heading("Figure-1 view: time per visual-embedding schema"))
    p = figures.figure1([r for r in lat if id(r) not in in_curve], out / "figures" / "figure1.png")
    if p:
        doc.add(
            Image(
                "figures/figure1.png",
                "Per-stage median time by schema. Top, measured here: each "
                "configuration's stages as shares of the bar (labels in ms, whiskers = IQR) and its total "
                "median on a log axis with the IQR (the summary table's number). Bottom, in a panel of its "
                "own: ViLT paper Figure 1 (P40 GPU, full-size models), quoted, hatched. Red labels: noisy or "
                "busy. The numbers drawn are in figures/figure1.json.",
            )
        )
        doc.add(
            Para(
                "Measured bars use the sizes each record states (tiny test configurations are much smaller "
                "than the paper's), so compare the shape (which stage dominates), not absolute times."
            )
        )
    else:
        doc.add(Para("No record in these runs has region, grid or patch stages, so there is nothing to draw."))

    doc.add(Heading("Taxonomy view: VE / TE / MI shares"))
    # sweep points are drawn in the scaling section; they stand in only when nothing else was measured
    arch = [r for r in lat if r.get("taxonomy") and id(r) not in in_curve] or [r for r in lat if r.get("taxonomy")]
    p = figures.taxonomy(arch, out / "figures" / "taxonomy.png")
    if p:
        doc.add(
            Image(
                "figures/taxonomy.png",
                "Share of VE + TE + MI median time per architecture with the ms, "
                "the class measured here, the paper's class (quoted) and the comparison that decided the "
                "class with its margin (figures/taxonomy.json).",
            )
        )
        close = [tables.label(r) for r in arch if tables.is_close_call(r["taxonomy"])]
        if close:
            doc.add(
                Para(
                    "**Close call**: the class of " + ", ".join(f"`{c}`" for c in close) + " was decided by "
                    f"less than {100 * tables.CLOSE_MARGIN:.0f}% (column `margin`), so ordinary run-to-run "
                    "drift can flip it; measure again with more iterations before reading anything into it."
                )
            )
        doc.add(
            w.table(
                "taxonomy",
                tables.taxonomy_table(arch),
                caption=f"rule: {arch[0]['taxonomy'].get('rule')}; "
                "`decided by` is the closest comparison of the rule and `margin` its ratio (1 = the class "
                "flips)",
            )
        )
    else:
        doc.add(Para("No whole-architecture latency records in these runs, so no taxonomy class was measured."))

    doc.add(Heading("Latency versus accuracy"))
    pts = tables.accuracy_points(records)
    if not pts:
        doc.add(
            Para(
                "No accuracy records in these runs (kind `accuracy`, written by the trainer), so there is no "
                "latency-versus-accuracy plot. Give a run directory holding them as well."
            )
        )
    else:
        p = figures.latency_accuracy(pts, out / "figures" / "latency_accuracy.png")
        if p:
            doc.add(
                Image(
                    "figures/latency_accuracy.png",
                    "Accuracy per task against latency (log), one marker per "
                    "architecture, coloured by the class measured here; error bars from the seeds.",
                )
            )
        else:
            doc.add(Para("Accuracy records exist, but none of their architectures has a latency record in these runs."))
        doc.add(w.table("accuracy", tables.accuracy_table(pts), caption="accuracy joined with latency on `arch`"))

    accuracy_view.add_section(doc, w, [r for r in records if r["kind"] != "latency" or id(r) not in in_curve], out)

    doc.add(Heading("Scaling"))
    if not cs:
        doc.add(
            Para(
                "No sweep in these runs (no configuration measured at two or more values of "
                f"{', '.join(AXES)}); `vlpbench sweep` makes one."
            )
        )
    for axis in AXES:
        ax_curves = [c for c in cs if c.axis == axis]
        if not ax_curves:
            continue
        doc.add(Heading(f"Scaling with {axis}", 3))
        figures.scaling(ax_curves, axis, out / "figures" / f"scaling_{axis}.png")
        doc.add(
            Image(
                f"figures/scaling_{axis}.png",
                f"Total median latency and peak memory against {axis}, one line per configuration, measured here.",
            )
        )
        unit = AXIS_UNITS[axis]
        slopes = Table(
            [
                text("configuration"),
                text("fastest_stage", "fastest-growing stage"),
                Column(f"stage_slope_ms_per_{unit}", f"stage slope (ms/{unit})"),
                Column(f"total_slope_ms_per_{unit}", f"total slope (ms/{unit})"),
                Column("points"),
            ]
        )
        points = Table(
            [
                text("configuration"),
                text(axis),
                Column("total_median_ms", "total median ms"),
                Column("total_iqr_ms", "total IQR ms"),
                Column("noisy", "noisy (CV > 10%)", fmt=yes_no),
                Column("peak_memory_MB", "peak memory MB"),
                Column("memory_added_MB", "memory added MB"),
            ]
        )
        for c in ax_curves:
            stage, s_ = stage_slopes(c)[0]
            slopes.add(c.label, stage, s_, slope(c.xs, c.medians()), len(c.xs))
            for tick, r in zip(c.ticks, c.records):
                points.add(
                    c.label,
                    tick,
                    r["total"]["median_ms"],
                    r["total"]["iqr_ms"],
                    r["total"].get("noisy"),
                    tables.peak_memory_mb(r),
                    tables.memory_added_mb(r),
                )
        doc.add(
            Para(
                "Fastest-growing stage: the leaf stage with the largest least-squares slope of its median "
                f"time against {axis} (ms per {unit}), from the measured points."
            )
        )
        doc.add(w.table(f"scaling-{axis}-slopes", slopes))
        doc.add(w.table(f"scaling-{axis}-points", points))

    others = [r for r in lat if id(r) not in in_curve]
    if others:
        doc.add(Heading("Per-stage times"))
        doc.add(
            Para(
                "Leaf stages in the order they ran; `unaccounted` is the total minus the sum of leaf stages "
                "(per iteration, median). Medians do not add exactly; each iteration's leaf stages plus "
                "`unaccounted` do equal its total (`vlpbench.store.load_samples` gives the samples). Sweep "
                "points are summarised above."
            )
        )
        for r in others:
            doc.add(Heading(tables.label(r), 3))
            params = r.get("params") or {}
            flops = r.get("flops") or {}
            mem = tables.peak_memory_mb(r)
            parts = ", ".join(f"{k} {v:,}" for k, v in params.items() if k != "total") or "-"
            doc.add(
                Para(
                    f"key `{r['key']}`, component `{r.get('component')}`, schema {tables.schema_of(r) or '-'}; "
                    f"params {tables.fmt(params.get('total'))} ({parts}); "
                    f"{tables.fmt(None if flops.get('total') is None else flops['total'] / 1e9)} GFLOPs "
                    f"(FLOPs, 2 per multiply-add); peak memory {tables.fmt(mem)} MB ({tables.memory_label(r)}); "
                    f"{r['total']['n']} timed iterations."
                )
            )
            facts = {k[len("measured.") :]: v for k, v in r["workload"].items() if k.startswith("measured.")}
            if facts:
                doc.add(
                    Para("Workload measured in the forward: " + ", ".join(f"{k} = {v}" for k, v in facts.items()) + ".")
                )
            doc.add(w.table(f"stages-{r['arch']}-{r['key']}", tables.stage_table(r)))

    facts = tables.paper_table(records)
    if facts.rows:
        doc.add(Heading("Reference facts (quoted from paper)"))
        doc.add(
            Para(
                "Carried in each record from its registry entry; quoted from the paper or repository named, "
                "never measured here. Figure-1 paper bars: ViLT paper (Kim et al., ICML 2021), Figure 1; see "
                "docs/reference.md."
            )
        )
        doc.add(w.table("paper-facts", facts))

    atomic_write_text(out / "report.md", doc.to_markdown())
    atomic_write_text(out / "report.html", doc.to_html())
    return out / "report.md"
