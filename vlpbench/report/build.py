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

import csv
import datetime as _dt
import io
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from vlpbench.errors import VlpbenchError
from vlpbench.store import atomic_write_text, load_records

from . import accuracy_view, figures, tables
from .doc import Bullets, Document, Heading, Image, Para, Table
from .sweep import AXES, AXIS_UNITS, curves, slope, stage_slopes

PathLike = Union[str, Path]
DEFAULT_OUT = Path("reports") / "report"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "x"


class _Writer:
    """Writes CSV twins of tables under ``tables/`` and returns Table blocks pointing at them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.names: set = set()

    def table(self, name: str, columns: Sequence[str], shown: Sequence[Sequence[Any]],
              raw: Optional[Sequence[Sequence[Any]]] = None, caption: Optional[str] = None) -> Table:
        base, n = _slug(name), 1
        fname = base
        while fname in self.names:
            n += 1
            fname = f"{base}-{n}"
        self.names.add(fname)
        rel = f"tables/{fname}.csv"
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        for r in (raw if raw is not None else shown):
            w.writerow(["" if v is None else v for v in r])
        atomic_write_text(self.out / rel, buf.getvalue())
        return Table(list(columns), [list(r) for r in shown], caption, rel)


def build_report(run_dirs: Sequence[PathLike], out: Optional[PathLike] = None) -> Path:
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
    doc.add(Para("Runs: " + ", ".join(f"`{d}`" for d in run_dirs) + f" ({len(lat)} latency and "
                 f"{len(records) - len(lat)} accuracy records)."))
    doc.add(Bullets([
        "**measured here**: every number in a table or solid mark comes from the result records listed above, "
        "on the machine described in the environment table (random weights, see each record's config).",
        "**quoted from paper**: numbers labelled `paper` (hatched bars, the `class (paper)` column and the "
        "reference-facts table) are copied from the ViLT paper or the named repository, measured elsewhere "
        "(Figure 1 of the paper: P40 GPU, full-size models); they are context, not results of this suite.",
    ]))

    doc.add(Heading("Environment"))
    cols, rows = tables.environment_table(records)
    doc.add(w.table("environment", cols, rows, caption="where the measured numbers were taken (one row per distinct environment)"))

    cs = curves(records, multi_run=multi)
    in_curve = {id(r) for c in cs for r in c.records}
    if lat:
        doc.add(Heading("Summary"))
        cols, shown, raw = tables.summary_table(lat)
        doc.add(w.table("summary", cols, shown, raw, caption="measured here: medians over the timed iterations; "
                        "FLOPs are 2 per multiply-add, as counted by the harness (see each record's flops.not_counted)"))

    doc.add(Heading("Figure-1 view: time per visual-embedding schema"))
    p = figures.figure1([r for r in lat if id(r) not in in_curve], out / "figures" / "figure1.png")
    if p:
        doc.add(Image("figures/figure1.png", "Per-stage median time by schema: stage shares (left) and summed stage "
                      "time on a log axis (right). Hatched bars: ViLT paper Figure 1, P40 GPU, full-size models "
                      "(quoted). Solid bars: measured here (sweep points are in the scaling section)."))
        doc.add(Para("Measured bars use the sizes each record states (tiny test configurations are much smaller "
                     "than the paper's), so compare the shape (which stage dominates), not absolute times."))
    else:
        doc.add(Para("No record in these runs has region, grid or patch stages, so there is nothing to draw."))

    doc.add(Heading("Taxonomy view: VE / TE / MI shares"))
    # sweep points are drawn in the scaling section; they stand in only when nothing else was measured
    arch = [r for r in lat if r.get("taxonomy") and id(r) not in in_curve] or [r for r in lat if r.get("taxonomy")]
    p = figures.taxonomy(arch, out / "figures" / "taxonomy.png")
    if p:
        doc.add(Image("figures/taxonomy.png", "Share of VE + TE + MI median time per architecture, with the class "
                      "measured here and the paper's class (quoted)."))
        cols, shown, raw = tables.taxonomy_table(arch)
        doc.add(w.table("taxonomy", cols, shown, raw, caption=f"rule: {arch[0]['taxonomy'].get('rule')}"))
    else:
        doc.add(Para("No whole-architecture latency records in these runs, so no taxonomy class was measured."))

    doc.add(Heading("Latency versus accuracy"))
    pts = tables.accuracy_points(records)
    if not pts:
        doc.add(Para("No accuracy records in these runs (kind `accuracy`, written by the trainer), so there is no "
                     "latency-versus-accuracy plot. Give a run directory holding them as well."))
    else:
        p = figures.latency_accuracy(pts, out / "figures" / "latency_accuracy.png")
        if p:
            doc.add(Image("figures/latency_accuracy.png", "Accuracy per task against latency (log), one marker per "
                          "architecture, coloured by the class measured here; error bars from the seeds."))
        else:
            doc.add(Para("Accuracy records exist, but none of their architectures has a latency record in these runs."))
        cols, rows = tables.accuracy_table(pts)
        doc.add(w.table("accuracy", cols, rows, caption="accuracy joined with latency on `arch`"))

    accuracy_view.add_section(doc, w, [r for r in records if r["kind"] != "latency" or id(r) not in in_curve], out)

    doc.add(Heading("Scaling"))
    if not cs:
        doc.add(Para("No sweep in these runs (no configuration measured at two or more values of "
                     f"{', '.join(AXES)}); `vlpbench sweep` makes one."))
    for axis in AXES:
        ax_curves = [c for c in cs if c.axis == axis]
        if not ax_curves:
            continue
        doc.add(Heading(f"Scaling with {axis}", 3))
        figures.scaling(ax_curves, axis, out / "figures" / f"scaling_{axis}.png")
        doc.add(Image(f"figures/scaling_{axis}.png", f"Total median latency and peak memory against {axis}, "
                      "one line per configuration, measured here."))
        slope_rows, slope_raw, point_rows, point_raw = [], [], [], []
        unit = AXIS_UNITS[axis]
        for c in ax_curves:
            sl = stage_slopes(c)
            total_slope = slope(c.xs, c.medians())
            stage, s = sl[0]
            slope_raw.append([c.label, stage, s, total_slope, len(c.xs)])
            slope_rows.append([c.label, stage, tables.fmt(s), tables.fmt(total_slope), len(c.xs)])
            for tick, r in zip(c.ticks, c.records):
                mem = tables.peak_memory_mb(r)
                noisy = r["total"].get("noisy")
                added = tables.memory_added_mb(r)
                point_raw.append([c.label, tick, r["total"]["median_ms"], r["total"]["iqr_ms"], noisy, mem, added])
                point_rows.append([c.label, tick, tables.fmt(r["total"]["median_ms"]), tables.fmt(r["total"]["iqr_ms"]),
                                   {True: "yes", False: "no"}.get(noisy, "-"), tables.fmt(mem), tables.fmt(added)])
        doc.add(Para("Fastest-growing stage: the leaf stage with the largest least-squares slope of its median "
                     f"time against {axis} (ms per {unit}), from the measured points."))
        doc.add(w.table(f"scaling-{axis}-slopes", ["configuration", "fastest-growing stage", f"stage slope (ms/{unit})",
                        f"total slope (ms/{unit})", "points"], slope_rows, slope_raw))
        doc.add(w.table(f"scaling-{axis}-points", ["configuration", axis, "total median ms", "total IQR ms",
                        "noisy (CV > 10%)", "peak memory MB", "memory added MB"], point_rows, point_raw))

    others = [r for r in lat if id(r) not in in_curve]
    if others:
        doc.add(Heading("Per-stage times"))
        doc.add(Para("Leaf stages in the order they ran; `unaccounted` is the total minus the sum of leaf stages "
                     "(per iteration, median), so the rows add up to `total`. Sweep points are summarised above."))
        for r in others:
            doc.add(Heading(tables.label(r), 3))
            params = (r.get("params") or {})
            flops = r.get("flops") or {}
            mem = tables.peak_memory_mb(r)
            doc.add(Para(f"key `{r['key']}`, component `{r.get('component')}`, schema {tables.schema_of(r) or '-'}; "
                         f"params {tables.fmt(params.get('total'))} ({', '.join(f'{k} {v:,}' for k, v in params.items() if k != 'total') or '-'}); "
                         f"{tables.fmt(None if flops.get('total') is None else flops['total'] / 1e9)} GFLOPs "
                         f"(FLOPs, 2 per multiply-add); peak memory {tables.fmt(mem)} MB ({tables.memory_label(r)}); "
                         f"{r['total']['n']} timed iterations."))
            facts = {k[len("measured."):]: v for k, v in r["workload"].items() if k.startswith("measured.")}
            if facts:
                doc.add(Para("Workload measured in the forward: " + ", ".join(f"{k} = {v}" for k, v in facts.items()) + "."))
            cols, shown, raw = tables.stage_table(r)
            doc.add(w.table(f"stages-{r['arch']}-{r['key']}", cols, shown, raw))

    cols, rows = tables.paper_table(records)
    if rows:
        doc.add(Heading("Reference facts (quoted from paper)"))
        doc.add(Para("Carried in each record from its registry entry; quoted from the paper or repository named, "
                     "never measured here. Figure-1 paper bars: ViLT paper Figure 1 (REFERENCE.md section 2)."))
        doc.add(w.table("paper-facts", cols, rows))

    atomic_write_text(out / "report.md", doc.to_markdown())
    atomic_write_text(out / "report.html", doc.to_html())
    return out / "report.md"

