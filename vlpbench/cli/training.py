"""``vlpbench train``, ``vlpbench train-detector``, ``vlpbench eval`` and ``vlpbench study``."""

from __future__ import annotations

import argparse
import json
import os

from vlpbench.errors import bad_value

from .measure import _float_type, _int_type

# Training seeds feed derived generator seeds (seed * 1,000,003 + step * 101 + rank), which must stay in 64 bits.
MAX_TRAIN_SEED = 2**32 - 1


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: intra-op threads for training / evaluation (unset: PyTorch's default, every core)."""
    if getattr(args, "threads", None) is None:
        return
    import torch

    torch.set_num_threads(args.threads)


def _add_threads(p) -> None:
    from vlpbench.harness.runner import max_threads

    p.add_argument(
        "--threads",
        type=_int_type("--threads", 1, max_threads()),
        help="intra-op CPU threads for training (default: PyTorch's, all cores)",
    )


def _small_arch(name: str) -> str:
    """``name`` resolved, if it is a small preset (registry tag ``small``), else one error listing them."""
    from vlpbench.presets.small import REFERENCE_ARCHS
    from vlpbench.registry import ARCH

    if name in REFERENCE_ARCHS:  # the study's relational references (Santoro et al.), trained beside the classes
        return name
    small = [e.name for e in ARCH.entries() if "small" in e.tags] + list(REFERENCE_ARCHS)
    resolved = ARCH.resolve(name)  # an unknown name: the registry's "unknown architecture" line
    if "small" not in ARCH.get(resolved).tags:
        raise bad_value("--arch", name, f"a small preset: {', '.join(small)}")
    return resolved


def _check_out(path: str, what: str) -> None:
    from vlpbench.store import check_output_dir

    check_output_dir(path, what)


def _check_file(path: str, what: str, accepted: str) -> None:
    if not os.path.isfile(path):
        raise bad_value(what, path, accepted)


def _train(args: argparse.Namespace) -> int:
    from vlpbench.presets import load_all
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.training import TrainConfig, train

    load_all()
    arch = _small_arch(args.arch)
    _check_out(args.run_dir, "--run-dir")
    if args.detector is not None:
        _check_file(args.detector, "--detector", "a detector.pt file written by `vlpbench train-detector`")
    _set_threads(args)
    cfg = TrainConfig(
        arch=arch,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_frac=args.warmup_frac,
        align_frac=args.align_frac,
        loss=args.loss,
        qa_norm=args.qa_norm,
        augment=args.augment,
        objectives=_objectives(args),
        tiny=args.tiny,
        detector=args.detector,
        checkpoint_every=args.checkpoint_every,
        data=_data_spec(args),
        progress=not args.no_progress,
        device=args.device,
        regions=args.regions,
    )
    data = SyntheticData(cfg.data.dataset_config())
    task, summary = train(cfg, args.run_dir, data=data, stop_after=args.stop_after)
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    print(json.dumps(summary, indent=1))
    if summary["finished"] and not args.no_eval:
        from vlpbench.study.evaluate import evaluate_run

        print(json.dumps(evaluate_run(task, data, args.run_dir), indent=1))
    return 0


def _objectives(args: argparse.Namespace):
    """``--objective NAME=WEIGHT`` (repeatable), ``--masking``, ``--hard-negatives`` -> ObjectiveConfig."""
    import dataclasses

    from vlpbench.study.objectives import ObjectiveConfig

    weights = [f.name for f in dataclasses.fields(ObjectiveConfig) if f.type in ("float", float)]
    fields = {}
    for item in args.objective or []:
        name, sep, value = item.partition("=")
        if not sep or name not in weights:
            raise bad_value("--objective", item, f"NAME=WEIGHT with NAME one of {', '.join(weights)}")
        try:
            fields[name] = float(value)
        except ValueError:
            raise bad_value("--objective", item, "NAME=WEIGHT with a number as WEIGHT") from None
    return ObjectiveConfig(masking=args.masking, hard_negatives=args.hard_negatives, **fields).validate()


def _data_spec(args: argparse.Namespace):
    """The generated data: ``--data`` names a design (vlpbench.study.runner.DATA_DESIGNS), sizes override it."""
    import dataclasses

    from vlpbench.study.runner import DATA_DESIGNS

    if args.data not in DATA_DESIGNS:
        raise bad_value("--data", args.data, DATA_DESIGNS)
    return dataclasses.replace(DATA_DESIGNS[args.data], n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)


def _add_data(p, n_train: int = 2000) -> None:
    p.add_argument("--data", default="default", help="data design (default: the study's; 'free': objects anywhere)")
    p.add_argument("--n-train", type=_int_type("--n-train", 1), default=n_train)
    p.add_argument("--n-val", type=_int_type("--n-val", 1), default=250)
    p.add_argument("--n-test", type=_int_type("--n-test", 1), default=250)


def _train_detector(args: argparse.Namespace) -> int:
    from vlpbench.presets import load_all
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.detector import DetectorConfig, train_detector

    load_all()
    from vlpbench.presets.small import REGION_ARCHS

    if _small_arch(args.arch) not in REGION_ARCHS:
        raise bad_value("--arch", args.arch, f"a small region preset: {', '.join(REGION_ARCHS)}")
    _check_out(args.out, "--out")
    _set_threads(args)
    data = SyntheticData(_data_spec(args).dataset_config())
    summary = train_detector(
        DetectorConfig(
            arch=args.arch,
            steps=args.steps,
            seed=args.seed,
            tiny=args.tiny,
            **({"labels": args.labels} if args.labels else {}),
        ).validate(),
        data,
        args.out,
    )
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vlpbench.study.evaluate_real import EvalSpec, evaluate, summary

    if not os.path.isdir(args.root):  # before the checkpoint is opened: the cheap check first
        raise bad_value("--root", args.root, "an existing directory with the dataset's official files")
    _set_threads(args)
    spec = EvalSpec(
        task=args.task,
        dataset=args.dataset,
        root=args.root,
        weights=args.weights,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        shortlist=args.shortlist,
        shortlist_weights=args.shortlist_weights,
    )
    print(json.dumps(summary(evaluate(spec, out=args.out, progress=not args.no_progress)), indent=1))
    return 0


def _study(args: argparse.Namespace) -> int:
    from vlpbench.presets import load_all
    from vlpbench.study.runner import get_profile, run_study

    load_all()
    archs = tuple(_small_arch(a.strip()) for a in args.arch.split(",")) if args.arch else None
    _check_out(args.out, "--out")
    _set_threads(args)
    profile = get_profile(
        args.profile,
        steps=args.steps,
        seeds=_seeds(args.seeds) if args.seeds else None,
        archs=archs,
        latency=False if args.no_latency else None,
        device=args.device,
        regions=args.regions,
    )
    run_study(profile, args.out, jobs=args.jobs, threads=args.threads)
    return 0


def _study_table(args: argparse.Namespace) -> int:
    from vlpbench.study.runner import table_from_runs

    _check_out(args.out, "--out")
    table_from_runs(args.run_dirs, args.out, per_arch_budgets=args.per_arch_budgets)
    return 0


def _seeds(text: str) -> tuple:
    seeds = []
    for part in text.split(","):
        try:
            seed = int(part)
        except ValueError:
            raise bad_value("--seeds", text, f"comma-separated integers from 0 to {MAX_TRAIN_SEED}") from None
        if not 0 <= seed <= MAX_TRAIN_SEED or seed in seeds:
            raise bad_value("--seeds", text, f"distinct comma-separated integers from 0 to {MAX_TRAIN_SEED}")
        seeds.append(seed)
    return tuple(seeds)


def register(sub) -> None:
    p = sub.add_parser("train", help="train one small architecture on the generated data (resumable; torchrun for DDP)")
    p.add_argument("--arch", required=True, help="small preset, e.g. vilt-small, clip-small, uniter-small")
    p.add_argument(
        "--run-dir", required=True, help="checkpoint, log and summary go here; an existing checkpoint resumes"
    )
    p.add_argument("--seed", type=_int_type("--seed", 0, MAX_TRAIN_SEED), default=0)
    p.add_argument("--steps", type=_int_type("--steps", 1), default=300)
    p.add_argument(
        "--batch-size", type=_int_type("--batch-size", 1), default=32, help="pairs per task per step per process"
    )
    p.add_argument(
        "--lr",
        type=_float_type("--lr", 0.0, inclusive=False),
        default=None,
        help="AdamW peak learning rate (default: the architecture's study rate, vlpbench.presets.small.study_lr: "
        "0.001, 0.0002 for vilbert-small; the run's train_summary.json records it)",
    )
    p.add_argument(
        "--weight-decay",
        type=_float_type("--weight-decay", 0.0),
        default=0.01,
        help="AdamW weight decay (matrices only)",
    )
    p.add_argument(
        "--warmup-frac",
        type=_float_type("--warmup-frac", 0.0),
        default=0.1,
        help="share of steps in linear warm-up, then cosine",
    )
    p.add_argument(
        "--align-frac",
        type=_float_type("--align-frac", 0.0),
        default=0.0,
        help="share of steps (the first) training only the alignment objective (default 0: every "
        "objective from step 0, as the study's profiles)",
    )
    p.add_argument("--loss", default="auto", help="dual encoders: infonce, hinge or auto (hinge for VSE)")
    p.add_argument(
        "--qa-norm",
        default="batch",
        help="dual encoders' QA head: batch (standardise each pooled embedding over the batch) or none",
    )
    p.add_argument(
        "--objective",
        action="append",
        metavar="NAME=WEIGHT",
        help="weight of one objective (repeatable): align, itm, mlm, wpa (ViLT: 0.1), itc, qa, match; 0 turns it off",
    )
    p.add_argument("--masking", default="mask", help="mask: every masked word -> [MASK]; bert: 80/10/10")
    p.add_argument("--hard-negatives", action="store_true", help="ITM negatives mined from ITC (needs itc > 0)")
    p.add_argument("--augment", default="none", help="none or randaugment (truth-preserving ops)")
    p.add_argument("--tiny", action="store_true", help="the preset's tiny variant")
    p.add_argument("--detector", help="detector.pt from train-detector (region architectures)")
    p.add_argument(
        "--regions",
        default="detected",
        help="region architectures: detected, or oracle (features of the ground-truth boxes, labelled)",
    )
    p.add_argument("--checkpoint-every", type=_int_type("--checkpoint-every", 1), default=100)
    p.add_argument(
        "--stop-after", type=_int_type("--stop-after", 1), help="stop after this many steps of this call (then resume)"
    )
    _add_data(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--no-eval",
        action="store_true",
        help="skip scoring the finished model on the generated test split (run_dir/metrics.json)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA for torchrun DDP runs when present)")
    _add_threads(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-detector", help="train the small Faster R-CNN region embedder on the generated boxes")
    p.add_argument("--arch", default="uniter-small", help="small region architecture whose embedder is trained")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=_int_type("--steps", 1), default=150)
    p.add_argument("--seed", type=_int_type("--seed", 0, MAX_TRAIN_SEED), default=0)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--labels", help="box classes: colour_shape (each colour-shape pair; default), shape or object")
    _add_threads(p)
    _add_data(p)
    p.set_defaults(func=_train_detector)

    p = sub.add_parser(
        "eval",
        help="accuracy of a local checkpoint on real data (VQAv2, NLVR2, COCO / Flickr30k, "
        "image folders); writes a kind: accuracy record; resumable",
    )
    p.add_argument("--task", default="retrieval", help="vqa, nlvr2, retrieval (default) or zero-shot")
    p.add_argument(
        "--dataset", required=True, help="vqav2 (vqa), nlvr2, coco / flickr30k (retrieval), imagefolder (zero-shot)"
    )
    p.add_argument("--root", required=True, help="folder with the dataset's official files and images")
    p.add_argument(
        "--weights",
        required=True,
        help="a transformers ViLT task / CLIP folder, or a `vlpbench train` run dir (retrieval)",
    )
    p.add_argument(
        "--split", help="split as the files name it (default: val2014, dev, test, val; NLVR2 test-P = test1)"
    )
    p.add_argument(
        "--limit", type=_int_type("--limit", 1), help="evaluate the first N examples (images for retrieval) only"
    )
    p.add_argument(
        "--batch-size", type=_int_type("--batch-size", 1), default=32, help="examples (ITM: pairs) per forward"
    )
    p.add_argument(
        "--shortlist",
        type=_int_type("--shortlist", 1),
        help="ViLT retrieval: re-rank the top K per query of --shortlist-weights",
    )
    p.add_argument("--shortlist-weights", help="CLIP folder whose cosine makes the ViLT retrieval shortlist")
    p.add_argument(
        "--out",
        help="run directory for the record (default: a new reports/runs/<UTC time>-eval); "
        "the same --out resumes an interrupted evaluation",
    )
    p.add_argument("--no-progress", action="store_true")
    _add_threads(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("study", help="the accuracy study: detector, every class x seeds, latency, tables")
    p.add_argument("--profile", default="default", help="default, full, quick or smoke")
    p.add_argument("--out", default="reports/accuracy")
    p.add_argument("--steps", type=_int_type("--steps", 1))
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument("--arch", help="comma-separated small presets")
    p.add_argument("--no-latency", action="store_true", help="skip measuring the small models' latency")
    p.add_argument("--device", help="training device: cpu, cuda or auto (default: the profile's)")
    p.add_argument(
        "--regions", help="region models: detected or oracle (ground-truth boxes, labelled); default: the profile's"
    )
    p.add_argument(
        "--jobs",
        type=_int_type("--jobs", 1),
        default=1,
        help="train this many (arch, seed) runs at once, each in its own process with --threads threads",
    )
    _add_threads(p)
    p.set_defaults(func=_study)

    p = sub.add_parser(
        "study-table",
        help="the study's tables (passed column, calibration, shallow against deep) from finished "
        "`vlpbench train` runs on one data design under one budget",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished, scored `vlpbench train` run directories")
    p.add_argument("--out", required=True, help="folder for accuracy.md, accuracy.csv and records/")
    p.add_argument(
        "--per-arch-budgets",
        action="store_true",
        help="let each architecture have its own steps, batch size and training scenes (as the full profile "
        "does); the table lists every row's budget",
    )
    p.set_defaults(func=_study_table)
