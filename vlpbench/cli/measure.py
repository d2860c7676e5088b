"""``vlpbench list``, ``vlpbench describe`` and ``vlpbench compare``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from vlpbench.errors import VlpbenchError


def _registries(plugins: list[str] = ()):
    """Every registry, with the presets and then ``plugins`` imported (so plugin names resolve)."""
    from vlpbench.harness.runner import load_plugins
    from vlpbench.presets import load_all
    from vlpbench.registry import REGISTRIES

    load_all()
    load_plugins(plugins)
    return REGISTRIES


def _int_type(what: str, low: int, high: int | None = None):
    """An argparse type: an integer in [low, high], refused with one line naming the value otherwise."""
    accepted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {value!r}; accepted: {accepted}") from None
        if n < low or (high is not None and n > high):
            raise argparse.ArgumentTypeError(f"invalid {what} {n}; accepted: {accepted}")
        return n

    return parse


def _float_type(what: str, low: float, inclusive: bool = True):
    """An argparse type: a finite number >= low (> low unless ``inclusive``)."""
    accepted = f"a number {'>=' if inclusive else '>'} {low:g}"

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {value!r}; accepted: {accepted}") from None
        if not math.isfinite(x) or x < low or (x == low and not inclusive):
            raise argparse.ArgumentTypeError(f"invalid {what} {value!r}; accepted: {accepted}")
        return x

    return parse


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers more models); repeatable",
    )


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _size(value: str) -> list[int]:
    try:
        parts = [int(v) for v in value.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid image size {value!r}; accepted: HxW, e.g. 384x640, or one number"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"invalid image size {value!r}; accepted: HxW with positive integers")
    return parts


def add_measure_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that measures (compare, sweep)."""
    from vlpbench.harness.env import DEFAULT_THREADS
    from vlpbench.harness.runner import max_threads

    g = p.add_argument_group("measurement")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    g.add_argument("--amp", action="store_true", help="autocast to --dtype instead of casting the model")
    g.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 matmuls and convolutions")
    g.add_argument("--cudnn-benchmark", action="store_true", help="CUDA: cudnn.benchmark kernel selection")
    g.add_argument("--batch-size", type=_int_type("batch size", 1), default=1)
    g.add_argument(
        "--threads",
        type=_int_type("thread count", 1, max_threads()),
        default=DEFAULT_THREADS,
        help=f"torch intra-op threads, recorded in every result (default: {DEFAULT_THREADS})",
    )
    g.add_argument(
        "--iters", type=_int_type("iteration count", 1), default=5, help="timed iterations at least (default: 5)"
    )
    g.add_argument(
        "--min-time",
        type=_float_type("min time", 0.0),
        default=2.0,
        help="seconds of timed iterations at least (default: 2)",
    )
    g.add_argument(
        "--max-iters",
        type=_int_type("max iterations", 1),
        default=None,
        help="timed iterations at most; >= --iters (default: 200, or --iters if larger)",
    )
    g.add_argument(
        "--warmup", type=_int_type("warmup", 0), default=None, help="warm-up iterations (default: 3 on CPU, 10 on CUDA)"
    )
    g.add_argument("--seed", type=_int_type("seed", 0, 2**64 - 1), default=0)
    g.add_argument(
        "--tiny", action="store_true", help="build the tiny test-size variants (seconds, not published sizes)"
    )
    g.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting pass")
    g.add_argument(
        "--in-process", action="store_true", help="measure in this process (peak RSS is then sampled, not exact)"
    )
    add_plugin_option(g)
    g.add_argument(
        "--target-ci",
        type=_float_type("--target-ci", 0.0, inclusive=False),
        default=None,
        metavar="FRAC",
        help="iterate until the 95%% CI of the median is within +-FRAC (0.02 = 2%%), bounded by "
        "--max-iters and --max-time; the record says whether it got there",
    )
    g.add_argument(
        "--max-time",
        type=_float_type("--max-time", 0.0, inclusive=False),
        default=None,
        metavar="S",
        help="cap on seconds of timed iterations (default: none; 300 with --target-ci)",
    )
    g.add_argument(
        "--variant",
        default="eager",
        metavar="NAME",
        help="eager, jit-freeze, inductor, inductor-freeze or (CUDA) cuda-graphs; each its own "
        "configuration, end to end only, its difference from eager recorded (default: eager)",
    )
    g.add_argument(
        "--trace",
        default=None,
        metavar="DIR",
        help="also write one Chrome/Perfetto trace per configuration to DIR (a separate traced pass, "
        "never mixed into the timed samples)",
    )
    g.add_argument(
        "--peak",
        default=None,
        metavar="FILE",
        help="`vlpbench peak` file for each stage's share of the GEMM peak (default: reports/peak.json when it exists)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def protocol_from(args) -> Any:
    """The protocol of the measurement options; an explicit --max-iters below --iters is refused."""
    from vlpbench.errors import bad_value
    from vlpbench.harness.protocol import Protocol

    if args.max_iters is not None and args.max_iters < args.iters:
        raise bad_value("--max-iters", args.max_iters, f"an integer >= --iters ({args.iters})")
    max_iters = args.max_iters if args.max_iters is not None else max(200, args.iters)
    return Protocol(
        warmup=args.warmup,
        min_iters=args.iters,
        min_time_s=args.min_time,
        max_iters=max_iters,
        target_ci=args.target_ci,
        max_time_s=args.max_time,
    ).validate()


def base_spec(args, **fields: Any):
    """A RunSpec carrying every measurement option of ``add_measure_options``; ``fields`` fill the rest."""
    from vlpbench.harness.runner import RunSpec

    return RunSpec(
        device=args.device,
        dtype=args.dtype,
        amp=args.amp,
        tf32=args.tf32,
        cudnn_benchmark=args.cudnn_benchmark,
        batch_size=args.batch_size,
        threads=args.threads,
        seed=args.seed,
        tiny=args.tiny,
        protocol=protocol_from(args),
        count_flops=not args.no_flops,
        plugins=list(args.plugin),
        variant=args.variant,
        trace_dir=os.path.abspath(args.trace) if args.trace else None,
        progress=not args.no_progress,
        peak_file=args.peak,
        **fields,
    )


def register(sub) -> None:
    from vlpbench.harness.runner import max_threads

    p = sub.add_parser("list", help="list what is registered")
    p.add_argument("kind", nargs="?", default="all", help="arch, visual, text, interaction, head or all")
    p.add_argument("pattern", nargs="?", default="*", help="glob over names (default: *)")
    add_plugin_option(p)
    p.set_defaults(func=run_list)

    p = sub.add_parser(
        "peak",
        help="this machine's fp32 GEMM peak (matmul and 1x1 conv) at a thread count",
        description="Time fp32 torch.mm (MKL/BLAS) and a 1x1 conv2d (oneDNN) at --threads and keep "
        "the faster as the peak; records then give each stage's GFLOP/s and its share "
        "of it. Entries are kept per CPU, device and thread count.",
    )
    p.add_argument(
        "--threads",
        type=_int_type("thread count", 1, max_threads()),
        default=None,
        help="intra-op threads (default: the harness default)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--out", default=None, metavar="FILE", help="peak file to update (default: reports/peak.json)")
    p.set_defaults(func=run_peak)

    p = sub.add_parser("describe", help="stages, sizes and sources of one registered name")
    p.add_argument("name")
    add_plugin_option(p)
    p.set_defaults(func=run_describe)

    p = sub.add_parser(
        "compare",
        help="measure architectures side by side (VE / TE / MI breakdown and class)",
        description="Measure each architecture in its own process and print one column per "
        "architecture. Short aliases (vilt, clip, ...) resolve to the paper presets; "
        "VISUAL+TEXT+INTERACTION[+HEAD] names an ad-hoc combination.",
    )
    p.add_argument("--arch", type=_csv, default=[], help="comma-separated architectures, e.g. vilt,clip")
    p.add_argument(
        "--visual",
        help="visual embedder(s), comma-separated, measured alone; with --interaction: an "
        "ad-hoc combination's visual embedder",
    )
    p.add_argument(
        "--backend",
        help="torchvision or detectron2: the backend of every region-feature embedder "
        "measured (default: each preset's, torchvision)",
    )
    p.add_argument("--text", help="ad-hoc combination's text embedder (default: the interaction's usual one)")
    p.add_argument("--interaction", help="ad-hoc combination's interaction")
    p.add_argument("--head", help="a task head added to every architecture (itm, mlm, itc, vqa, nlvr2, retrieval)")
    p.add_argument("--image-size", type=_size, help="input image size HxW for every architecture")
    p.add_argument("--text-len", type=_int_type("text length", 1), help="text tokens for every architecture")
    p.add_argument("--regions", type=_int_type("regions", 1), help="regions K for region-feature architectures")
    p.add_argument(
        "--weights",
        metavar="DIR",
        help="load a local transformers checkpoint (ViLT or CLIP "
        "save_pretrained folder) into the matching architecture",
    )
    p.add_argument(
        "--taxonomy-factor",
        type=_float_type("--taxonomy-factor", 1.0),
        default=3.0,
        help="VE~TE factor of the class rule (default: 3)",
    )
    p.add_argument(
        "--out", help="run directory for the records (default: reports/runs/<time>-compare); an existing one resumes"
    )
    p.add_argument(
        "--format",
        default="table",
        help="table, markdown, csv (tidy: one row per architecture x stage), csv-summary (one row per "
        "configuration) or json (the records) (default: table); both CSVs are also written "
        "into the run directory",
    )
    add_measure_options(p)
    p.set_defaults(func=run_compare)


def run_peak(args) -> int:
    from vlpbench.harness.env import DEFAULT_THREADS
    from vlpbench.harness.peak import measure_peak, save_peak
    from vlpbench.harness.runner import RunSpec

    threads = args.threads if args.threads is not None else DEFAULT_THREADS
    RunSpec(target="", device=args.device, threads=threads).validate()  # one clear line for a bad device / count
    res = measure_peak(threads, args.device)
    path = save_peak(res, args.out)
    for k in res["kernels"]:
        print(f"  {k['shape']:<28} {k['gflop_per_s']:8.1f} GFLOP/s")
    print(
        f"peak fp32 on {res['cpu'] if args.device == 'cpu' else args.device}, {res['threads']} thread(s): "
        f"{res['peak_gflop_per_s']:.1f} GFLOP/s from {res['peak_source']} (matmul {res['matmul_gflop_per_s']:.1f}, "
        f"1x1 conv {res['conv1x1_gflop_per_s']:.1f}; load average {res['load_avg']})"
    )
    print(f"written to {path}")
    return 0


def run_list(args) -> int:
    regs = _registries(args.plugin)
    kinds = list(regs) if args.kind == "all" else [args.kind]
    for kind in kinds:
        if kind not in regs:
            raise VlpbenchError(f"invalid kind {kind!r}; accepted: all, {', '.join(regs)}")
        reg = regs[kind]
        entries = reg.entries(args.pattern)
        print(f"{kind} ({len(entries)}):")
        for e in entries:
            alias = f" (alias: {', '.join(e.aliases)})" if e.aliases else ""
            print(f"  {e.name:<22}{alias} {e.description}")
    return 0


def run_describe(args) -> int:
    import dataclasses

    regs = _registries(args.plugin)
    hits = [(k, r.get(args.name)) for k, r in regs.items() if args.name in r]
    if not hits:
        everything = sorted({n for r in regs.values() for n in r.names(include_aliases=True)})
        raise VlpbenchError(f"unknown name {args.name!r}; accepted: {', '.join(everything)}")
    for kind, e in hits:
        print(f"{e.name} [{kind}] {e.description}")
        if e.aliases:
            print(f"  aliases: {', '.join(e.aliases)}")
        print("  config:")
        for f in dataclasses.fields(e.config):
            print(f"    {f.name} = {getattr(e.config, f.name)!r}")
        if kind in ("arch", "visual", "text"):
            import torch

            with torch.device("meta"):
                module = e.builder(e.config)
            print(f"  parameters: {sum(p.numel() for p in module.parameters()) / 1e6:.2f} M")
            print(f"  stages: {', '.join(_dry_run_stages(e))}  (read off a dry run of the tiny variant)")
            print(f"  workload: {module.workload()}")
            if kind in ("visual", "text"):
                print(f"  output: {module.output_spec()}")
        if e.paper:
            print("  paper (reference, not measured):")
            for k, v in e.paper.items():
                print(f"    {k}: {v}")
    return 0


def _dry_run_stages(entry) -> list[str]:
    """The leaf stages ``entry``'s model emits, read off one forward of its tiny variant (same structure)."""
    import torch

    from vlpbench.stages import stage_names

    torch.manual_seed(0)
    return stage_names(entry.builder(entry.make_config(tiny=True)).eval())


def compare_targets(args) -> list[str]:
    from vlpbench.registry import INTERACTION

    targets = list(args.arch)
    if args.visual and not (args.interaction or args.text):
        return targets + [f"visual:{v}" for v in _csv(args.visual)]
    if args.visual or args.interaction or args.text:
        if not (args.visual and args.interaction):
            raise VlpbenchError("an ad-hoc combination needs both --visual and --interaction (and optionally --text)")
        text = args.text or {"dual-encoder": "clip-text-b32", "vse-gpo": "bigru-text"}.get(
            INTERACTION.resolve(args.interaction), "bert-base-embed"
        )
        targets.append(f"{args.visual}+{text}+{args.interaction}")
    if not targets:
        raise VlpbenchError("nothing to compare; give --arch A,B (e.g. vilt,clip) or --visual V --interaction I")
    return targets


def backend_overrides(visual: str, backend: Any, *, nested: bool) -> dict[str, Any]:
    """Config overrides that put a region-feature visual embedder (registry tag "region") on ``backend``."""
    from vlpbench.registry import VISUAL

    if backend is None or "region" not in VISUAL.get(visual).tags:
        return {}
    return {"visual_overrides": {"backend": backend}} if nested else {"backend": backend}


def compare_specs(args) -> list[Any]:
    """One checked RunSpec per compared architecture (plugins imported before any name is resolved)."""
    from vlpbench.harness.runner import preflight
    from vlpbench.registry import ARCH, HEAD, VISUAL

    if args.backend not in (None, "torchvision", "detectron2"):
        raise VlpbenchError(f"invalid backend {args.backend!r}; accepted: torchvision, detectron2")
    _registries(args.plugin)
    workload: dict[str, Any] = {}
    if args.image_size:
        workload["image_size"] = args.image_size
    if args.text_len is not None:
        workload["text_len"] = args.text_len
    if args.regions is not None:
        workload["regions"] = args.regions
    overrides = {"head": HEAD.resolve(args.head)} if args.head else {}
    specs = []
    for target in compare_targets(args):
        if target.startswith("visual:"):
            name = VISUAL.resolve(target[len("visual:") :])
            specs.append(
                preflight(
                    base_spec(
                        args,
                        target=name,
                        component="visual",
                        workload=dict(workload),
                        overrides=backend_overrides(name, args.backend, nested=False),
                    )
                )
            )
            continue
        name = target if "+" in target else ARCH.resolve(target)
        arch_cfg = None if "+" in target else ARCH.get(name).config
        visual = VISUAL.resolve(target.split("+")[0]) if arch_cfg is None else getattr(arch_cfg, "visual", None)
        spec_overrides: dict[str, Any] = dict(overrides) if "+" not in target else {}
        if visual is not None and backend_overrides(visual, args.backend, nested=False):
            base = dict(getattr(arch_cfg, "visual_overrides", None) or {})
            spec_overrides["visual_overrides"] = {**base, "backend": args.backend}
        if "+" in target and args.head:
            name = f"{target}+{HEAD.resolve(args.head)}"
        spec = base_spec(
            args,
            target=name,
            component="arch",
            workload=dict(workload),
            overrides=spec_overrides,
            taxonomy_factor=args.taxonomy_factor,
            weights=args.weights,
        )
        specs.append(preflight(spec))
    return specs


def run_compare(args) -> int:
    from vlpbench.harness.runner import run_many
    from vlpbench.report.compare import FORMATS, format_comparison, write_csvs
    from vlpbench.store import RunDir, check_output_dir

    if args.format not in FORMATS:
        raise VlpbenchError(f"invalid format {args.format!r}; accepted: {', '.join(FORMATS)}")
    if args.out:
        check_output_dir(args.out, "--out")
    specs = compare_specs(args)  # every check before the run directory or a subprocess exists
    meta = {"command": ["vlpbench", *args.argv], "targets": [s.target for s in specs]}
    run = (
        RunDir.open(args.out, create=True, label="compare", meta=meta)
        if args.out
        else RunDir.create("compare", meta=meta)
    )
    n = len(specs)

    def progress(event: str, spec) -> None:
        i = [s.key() for s in specs].index(spec.key()) + 1
        verb = "already measured, skipping" if event == "skip" else "measuring"
        print(
            f"[{i}/{n}] {verb} {spec.target} ({spec.device}, {spec.dtype}, batch {spec.batch_size}, "
            f"{spec.threads} threads)",
            file=sys.stderr,
            flush=True,
        )

    records = run_many(specs, run, isolated=not args.in_process, progress=progress)
    print(format_comparison(records, args.format), end="")
    written = write_csvs(records, run.path)
    print(f"records: {run.path} (tables: {', '.join(p.name for p in written)})", file=sys.stderr)
    return 0
