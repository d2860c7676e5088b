"""``vlpbench list``, ``vlpbench describe`` and ``vlpbench compare``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List

from vlpbench.errors import VlpbenchError


def _registries():
    from vlpbench.presets import load_all
    from vlpbench.registry import REGISTRIES

    load_all()
    return REGISTRIES


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _size(value: str) -> List[int]:
    try:
        parts = [int(v) for v in value.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid image size {value!r}; accepted: HxW, e.g. 384x640, or one number")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"invalid image size {value!r}; accepted: HxW with positive integers")
    return parts


def add_measure_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that measures (compare, sweep)."""
    from vlpbench.harness.env import DEFAULT_THREADS

    g = p.add_argument_group("measurement")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    g.add_argument("--amp", action="store_true", help="autocast to --dtype instead of casting the model")
    g.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 matmuls and convolutions")
    g.add_argument("--cudnn-benchmark", action="store_true", help="CUDA: cudnn.benchmark kernel selection")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch intra-op threads, recorded in every result (default: {DEFAULT_THREADS})")
    g.add_argument("--iters", type=int, default=5, help="timed iterations at least (default: 5)")
    g.add_argument("--min-time", type=float, default=2.0, help="seconds of timed iterations at least (default: 2)")
    g.add_argument("--max-iters", type=int, default=200)
    g.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default: 3 on CPU, 10 on CUDA)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tiny", action="store_true", help="build the tiny test-size variants (seconds, not published sizes)")
    g.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting pass")
    g.add_argument("--in-process", action="store_true",
                   help="measure in this process (peak RSS is then sampled, not exact)")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers more models); repeatable")


def protocol_from(args) -> Any:
    from vlpbench.harness.protocol import Protocol

    return Protocol(warmup=args.warmup, min_iters=args.iters, min_time_s=args.min_time,
                    max_iters=max(args.max_iters, args.iters)).validate()


def base_spec(args, **fields: Any):
    """A RunSpec carrying every measurement option of ``add_measure_options``; ``fields`` fill the rest."""
    from vlpbench.harness.runner import RunSpec

    return RunSpec(device=args.device, dtype=args.dtype, amp=args.amp, tf32=args.tf32,
                   cudnn_benchmark=args.cudnn_benchmark, batch_size=args.batch_size, threads=args.threads,
                   seed=args.seed, tiny=args.tiny, protocol=protocol_from(args), count_flops=not args.no_flops,
                   plugins=list(args.plugin), **fields)


def register(sub) -> None:
    p = sub.add_parser("list", help="list what is registered")
    p.add_argument("kind", nargs="?", default="all", help="arch, visual, text, interaction, head or all")
    p.add_argument("pattern", nargs="?", default="*", help="glob over names (default: *)")
    p.set_defaults(func=run_list)

    p = sub.add_parser("describe", help="stages, sizes and sources of one registered name")
    p.add_argument("name")
    p.set_defaults(func=run_describe)

    p = sub.add_parser("compare", help="measure architectures side by side (VE / TE / MI breakdown and class)",
                       description="Measure each architecture in its own process and print one column per "
                                   "architecture. Short aliases (vilt, clip, ...) resolve to the paper presets; "
                                   "VISUAL+TEXT+INTERACTION[+HEAD] names an ad-hoc combination.")
    p.add_argument("--arch", type=_csv, default=[], help="comma-separated architectures, e.g. vilt,clip")
    p.add_argument("--visual", help="visual embedder(s), comma-separated, measured alone; with --interaction: an "
                                    "ad-hoc combination's visual embedder")
    p.add_argument("--backend", help="torchvision or detectron2: the backend of every region-feature embedder "
                                     "measured (default: each preset's, torchvision)")
    p.add_argument("--text", help="ad-hoc combination's text embedder (default: the interaction's usual one)")
    p.add_argument("--interaction", help="ad-hoc combination's interaction")
    p.add_argument("--head", help="a task head added to every architecture (itm, mlm, itc, vqa, nlvr2, retrieval)")
    p.add_argument("--image-size", type=_size, help="input image size HxW for every architecture")
    p.add_argument("--text-len", type=int, help="text tokens for every architecture")
    p.add_argument("--regions", type=int, help="regions K for region-feature architectures")
    p.add_argument("--weights", metavar="DIR", help="load a local transformers checkpoint (ViLT or CLIP "
                                                    "save_pretrained folder) into the matching architecture")
    p.add_argument("--taxonomy-factor", type=float, default=3.0, help="VE~TE factor of the class rule (default: 3)")
    p.add_argument("--out", help="run directory for the records (default: reports/runs/<time>-compare); "
                                 "an existing one resumes")
    p.add_argument("--format", default="table", help="table, markdown, csv or json (default: table)")
    add_measure_options(p)
    p.set_defaults(func=run_compare)


def run_list(args) -> int:
    regs = _registries()
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

    regs = _registries()
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
            print(f"  stages: {', '.join(module.stage_names())}")
            print(f"  workload: {module.workload()}")
            if hasattr(module, "output_spec"):
                print(f"  output: {module.output_spec()}")
        if e.paper:
            print("  paper (reference, not measured):")
            for k, v in e.paper.items():
                print(f"    {k}: {v}")
    return 0


def compare_targets(args) -> List[str]:
    from vlpbench.registry import INTERACTION

    targets = list(args.arch)
    if args.visual and not (args.interaction or args.text):
        return targets + [f"visual:{v}" for v in _csv(args.visual)]
    if args.visual or args.interaction or args.text:
        if not (args.visual and args.interaction):
            raise VlpbenchError("an ad-hoc combination needs both --visual and --interaction (and optionally --text)")
        text = args.text or {"dual-encoder": "clip-text-b32", "vse-gpo": "bigru-text"}.get(
            INTERACTION.resolve(args.interaction), "bert-base-embed")
        targets.append(f"{args.visual}+{text}+{args.interaction}")
    if not targets:
        raise VlpbenchError("nothing to compare; give --arch A,B (e.g. vilt,clip) or --visual V --interaction I")
    return targets


def backend_overrides(visual: str, backend: Any, *, nested: bool) -> Dict[str, Any]:
    """Config overrides that put a region-feature visual embedder (registry tag "region") on ``backend``."""
    from vlpbench.registry import VISUAL

    if backend is None or "region" not in VISUAL.get(visual).tags:
        return {}
    return {"visual_overrides": {"backend": backend}} if nested else {"backend": backend}


def run_compare(args) -> int:
    from vlpbench.compare import FORMATS, format_comparison
    from vlpbench.harness.runner import run_many
    from vlpbench.registry import ARCH, HEAD, VISUAL
    from vlpbench.store import RunDir

    if args.format not in FORMATS:
        raise VlpbenchError(f"invalid format {args.format!r}; accepted: {', '.join(FORMATS)}")
    if args.backend not in (None, "torchvision", "detectron2"):
        raise VlpbenchError(f"invalid backend {args.backend!r}; accepted: torchvision, detectron2")
    _registries()
    workload: Dict[str, Any] = {}
    if args.image_size:
        workload["image_size"] = args.image_size
    if args.text_len is not None:
        if args.text_len < 1:
            raise VlpbenchError(f"invalid text length {args.text_len}; accepted: an integer >= 1")
        workload["text_len"] = args.text_len
    if args.regions is not None:
        if args.regions < 1:
            raise VlpbenchError(f"invalid regions {args.regions}; accepted: an integer >= 1")
        workload["regions"] = args.regions
    overrides = {"head": HEAD.resolve(args.head)} if args.head else {}
    specs = []
    for target in compare_targets(args):
        if target.startswith("visual:"):
            name = VISUAL.resolve(target[len("visual:"):])
            specs.append(base_spec(args, target=name, component="visual", workload=dict(workload),
                                   overrides=backend_overrides(name, args.backend, nested=False)).validate())
            continue
        name = target if "+" in target else ARCH.resolve(target)
        spec = base_spec(args, target=name, component="arch", workload=dict(workload),
                         overrides=dict(overrides) if "+" not in target else {},
                         taxonomy_factor=args.taxonomy_factor, weights=args.weights)
        if "+" in target and args.head:
            spec.target = f"{target}+{HEAD.resolve(args.head)}"
        arch_cfg = None if "+" in target else ARCH.get(name).config
        visual = target.split("+")[0] if arch_cfg is None else arch_cfg.visual
        if backend_overrides(visual, args.backend, nested=False):
            base = dict(getattr(arch_cfg, "visual_overrides", None) or {})
            spec.overrides["visual_overrides"] = {**base, "backend": args.backend}
        specs.append(spec.validate())
    run = RunDir.open(args.out, create=True, label="compare") if args.out else RunDir.create("compare")
    n = len(specs)

    def progress(event: str, spec) -> None:
        i = [s.key() for s in specs].index(spec.key()) + 1
        verb = "already measured, skipping" if event == "skip" else "measuring"
        print(f"[{i}/{n}] {verb} {spec.target} ({spec.device}, {spec.dtype}, batch {spec.batch_size}, "
              f"{spec.threads} threads)", file=sys.stderr, flush=True)

    records = run_many(specs, run, isolated=not args.in_process, progress=progress)
    print(format_comparison(records, args.format), end="")
    print(f"records: {run.path}", file=sys.stderr)
    return 0
