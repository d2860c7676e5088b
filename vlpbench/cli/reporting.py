"""``vlpbench report``, ``vlpbench sweep`` and ``vlpbench diff``: parse arguments, call vlpbench.report."""

from __future__ import annotations

import argparse
import sys

from .measure import _csv as _names
from .measure import _float_type, _registries, add_measure_options, base_spec


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="build a report folder (Markdown, HTML, PNG figures) from run directories",
        description="Build a self-contained report folder (report.md, report.html, figures/*.png, "
        "tables/*.csv) from one or more run directories.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (reports/runs/<run>)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default: reports/report/<UTC timestamp>)")
    p.set_defaults(func=run_report)

    s = sub.add_parser(
        "sweep",
        help="measure latency and memory along image size, regions, text length or batch size",
        description="Scaling sweep: one axis varied at a time, each point measured by the shared "
        "harness into a run directory; the same --out resumes an interrupted sweep.",
    )
    s.add_argument("--arch", type=_names, default=[], metavar="NAME[,NAME]", help="architectures to sweep")
    s.add_argument("--visual", type=_names, default=[], metavar="NAME[,NAME]", help="visual embedders to sweep")
    s.add_argument("--text", type=_names, default=[], metavar="NAME[,NAME]", help="text embedders to sweep")
    s.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="an axis and its values, repeatable: image_size=224x224,384x640 | regions=10,36,100 | "
        "text_len=8,16,40 | batch_size=1,2,4",
    )
    s.add_argument(
        "--out",
        default=None,
        metavar="RUN_DIR",
        help="run directory to write (and resume); default: a new reports/runs/<stamp>-sweep",
    )
    add_measure_options(s)
    s.set_defaults(func=run_sweep)

    d = sub.add_parser(
        "diff",
        help="compare two runs: medians, ratio B/A, Mann-Whitney U significance",
        description="Compare every configuration present in both runs; exit 1 with --fail-above "
        "when a significant slowdown exceeds the given percentage, 2 when the runs have "
        "no configuration in common (nothing was compared).",
    )
    d.add_argument("run_a", metavar="RUN_A")
    d.add_argument("run_b", metavar="RUN_B")
    d.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    d.add_argument(
        "--fail-above",
        type=_float_type("--fail-above", 0.0),
        default=None,
        metavar="PCT",
        help="exit 1 if a significant slowdown of a total exceeds PCT percent",
    )
    d.add_argument("--stages", action="store_true", help="also compare every leaf stage")
    d.set_defaults(func=run_diff)


def run_report(args: argparse.Namespace) -> int:
    from vlpbench.report.build import DEFAULT_OUT, build_report
    from vlpbench.store import RunDir, check_output_dir

    check_output_dir(args.out or DEFAULT_OUT, "--out")
    for run in args.runs:
        RunDir.open(run).records()  # every run directory and record checked before anything is written
    path = build_report(args.runs, args.out)
    print(f"report: {path}  (and {path.with_suffix('.html')})")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from vlpbench.errors import VlpbenchError
    from vlpbench.harness.runner import preflight
    from vlpbench.report.sweep import parse_axis, sweep_specs
    from vlpbench.report.sweep import run_sweep as sweep
    from vlpbench.store import RunDir, check_output_dir

    if args.out:
        check_output_dir(args.out, "--out")
    _registries(args.plugin)
    axes = [parse_axis(a) for a in args.axis]
    if len({a for a, _ in axes}) != len(axes):
        raise VlpbenchError("an axis is given twice; give each --axis once with all its values")
    targets = [(n, "arch") for n in args.arch] + [(n, "visual") for n in args.visual] + [(n, "text") for n in args.text]
    base = base_spec(args, target="")
    specs = [preflight(s) for s in sweep_specs(targets, axes, base)]  # all checked before the run directory exists
    meta = {
        "command": ["vlpbench", *args.argv],
        "sweep": {"axes": [[a, v] for a, v in axes], "targets": [list(t) for t in targets]},
    }
    run = (
        RunDir.open(args.out, create=True, label="sweep", meta=meta) if args.out else RunDir.create("sweep", meta=meta)
    )
    sweep(specs, run, isolated=not args.in_process, show_progress=not args.no_progress)
    print(f"sweep: {len(specs)} points in {run.path}; `vlpbench report {run.path}` plots them")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from vlpbench.errors import VlpbenchError
    from vlpbench.report.diff import diff_runs, format_text

    d = diff_runs(args.run_a, args.run_b, alpha=args.alpha, stages=args.stages)
    if not d.rows:  # a CI gate that compared nothing must not pass
        raise VlpbenchError(
            f"no configuration is present in both runs ({len(d.only_a)} only in {args.run_a!r}, "
            f"{len(d.only_b)} only in {args.run_b!r}); nothing was compared; accepted: two runs "
            "measuring at least one configuration in common"
        )
    for w in d.warnings:
        print(f"vlpbench diff: warning: {w}", file=sys.stderr)
    print(format_text(d))
    if args.fail_above is not None:
        slow = d.slowdowns(args.fail_above)
        if slow:
            for r in slow:
                print(
                    f"vlpbench diff: {r.config}: {100 * (r.ratio - 1):.1f}% slower (p={r.p:.3g}), above "
                    f"--fail-above {args.fail_above:g}%",
                    file=sys.stderr,
                )
            return 1
    return 0
