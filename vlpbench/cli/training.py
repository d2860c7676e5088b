"""``vlpbench train``, ``vlpbench train-detector``, ``vlpbench eval`` and ``vlpbench study``."""

from __future__ import annotations

import argparse
import json
import os

from vlpbench.errors import bad_value


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: intra-op threads for training / evaluation (unset: PyTorch's default, every core)."""
    if getattr(args, "threads", None) is None:
        return
    if args.threads < 1:
        raise bad_value("--threads", args.threads, "an integer >= 1")
    import torch

    torch.set_num_threads(args.threads)


def _add_threads(p) -> None:
    p.add_argument("--threads", type=int, help="intra-op CPU threads for training (default: PyTorch's, all cores)")


def _train(args: argparse.Namespace) -> int:
    from vlpbench.presets import load_all
    from vlpbench.study.training import TrainConfig, train

    _set_threads(args)
    load_all()
    cfg = TrainConfig(arch=args.arch, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_frac=args.warmup_frac, align_frac=args.align_frac,
                      loss=args.loss, augment=args.augment, objectives=_objectives(args),
                      tiny=args.tiny, detector=args.detector, checkpoint_every=args.checkpoint_every,
                      data=_data_spec(args), progress=not args.no_progress, device=args.device,
                      regions=args.regions)
    _, summary = train(cfg, args.run_dir, stop_after=args.stop_after)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(summary, indent=1))
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
    p.add_argument("--n-train", type=int, default=n_train)
    p.add_argument("--n-val", type=int, default=250)
    p.add_argument("--n-test", type=int, default=250)


def _train_detector(args: argparse.Namespace) -> int:
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.detector import DetectorConfig, train_detector
    from vlpbench.presets import load_all
    _set_threads(args)
    load_all()
    data = SyntheticData(_data_spec(args).dataset_config())
    summary = train_detector(DetectorConfig(arch=args.arch, steps=args.steps, seed=args.seed, tiny=args.tiny),
                             data, args.out)
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vlpbench.study.evaluate_real import evaluate_checkpoint
    from vlpbench.presets import load_all

    load_all()
    result = evaluate_checkpoint(args.weights, dataset=args.dataset, root=args.root, split=args.split,
                                 limit=args.limit)
    print(json.dumps(result, indent=1))
    return 0


def _study(args: argparse.Namespace) -> int:
    from vlpbench.presets import load_all
    from vlpbench.study.runner import get_profile, run_study

    _set_threads(args)
    load_all()
    profile = get_profile(args.profile, steps=args.steps,
                          seeds=tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None,
                          archs=tuple(args.arch.split(",")) if args.arch else None,
                          latency=False if args.no_latency else None, device=args.device, regions=args.regions)
    run_study(profile, args.out, jobs=args.jobs, threads=args.threads)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train one small architecture on the generated data (resumable; torchrun for DDP)")
    p.add_argument("--arch", required=True, help="small preset, e.g. vilt-small, clip-small, uniter-small")
    p.add_argument("--run-dir", required=True, help="checkpoint, log and summary go here; an existing checkpoint resumes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32, help="pairs per task per step per process")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (matrices only)")
    p.add_argument("--warmup-frac", type=float, default=0.1, help="share of steps in linear warm-up, then cosine")
    p.add_argument("--align-frac", type=float, default=0.4,
                   help="share of steps (the first) training only the alignment objective (0: every objective "
                        "from step 0, as the study's profiles)")
    p.add_argument("--loss", default="auto", help="dual encoders: infonce, hinge or auto (hinge for VSE)")
    p.add_argument("--objective", action="append", metavar="NAME=WEIGHT",
                   help="weight of one objective (repeatable): align, itm, mlm, wpa (ViLT: 0.1), itc, qa, match; "
                        "0 turns it off")
    p.add_argument("--masking", default="mask", help="mask: every masked word -> [MASK]; bert: 80/10/10")
    p.add_argument("--hard-negatives", action="store_true", help="ITM negatives mined from ITC (needs itc > 0)")
    p.add_argument("--augment", default="none", help="none or randaugment (truth-preserving ops)")
    p.add_argument("--tiny", action="store_true", help="the preset's tiny variant")
    p.add_argument("--detector", help="detector.pt from train-detector (region architectures)")
    p.add_argument("--regions", default="detected",
                   help="region architectures: detected, or oracle (features of the ground-truth boxes, labelled)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--stop-after", type=int, help="stop after this many steps of this call (then resume)")
    _add_data(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA for torchrun DDP runs when present)")
    _add_threads(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-detector", help="train the small Faster R-CNN region embedder on the generated boxes")
    p.add_argument("--arch", default="uniter-small", help="small region architecture whose embedder is trained")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true")
    _add_threads(p)
    _add_data(p)
    p.set_defaults(func=_train_detector)

    p = sub.add_parser("eval", help="retrieval R@K of a checkpoint on a local COCO / Flickr30k Karpathy split")
    p.add_argument("--dataset", required=True, help="coco or flickr30k")
    p.add_argument("--root", required=True, help="folder with the Karpathy JSON and the images")
    p.add_argument("--weights", required=True, help="a transformers ViLT / CLIP folder, or a `vlpbench train` run dir")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.set_defaults(func=_eval)

    p = sub.add_parser("study", help="the accuracy study: detector, every class x seeds, latency, tables")
    p.add_argument("--profile", default="default", help="default, full, quick or smoke")
    p.add_argument("--out", default="reports/accuracy")
    p.add_argument("--steps", type=int)
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument("--arch", help="comma-separated small presets")
    p.add_argument("--no-latency", action="store_true", help="skip measuring the small models' latency")
    p.add_argument("--device", help="training device: cpu, cuda or auto (default: the profile's)")
    p.add_argument("--regions", help="region models: detected (default) or oracle (ground-truth boxes, labelled)")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many (arch, seed) runs at once, each in its own process with --threads threads")
    _add_threads(p)
    p.set_defaults(func=_study)
