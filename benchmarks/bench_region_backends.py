"""torchvision backend / detectron2 backend, same weights and same work, interleaved in one process.

    GLIBC_TUNABLES=... flock /work/timing.lock .venv/bin/python benchmarks/bench_region_backends.py \
        --rounds 4 --c4-proposals 100 [--profile-backbone]

Both backends of each network get the same weights (the torchvision model's, calibrated once) and the same
settings where they can differ: detectron2's unrounded anchors and its score-filtered, batched detection NMS.
So both run on the same proposals and RoIs.  Prints per-stage medians and the ratio of the totals.
``--profile-backbone`` then runs one ``torch.profiler`` pass over each backend's backbone on the same
normalised input and prints the operators by self CPU time (one pass each: a look at the kernels, not a timing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

import vlpbench.presets.region  # noqa: F401
from vlpbench.registry import VISUAL

SAME_WORK = dict(anchor_rounding=False, nms_mode="batched", det_nms_boxes="regressed")


class Clock:
    def __init__(self):
        self.ms = {}

    @contextmanager
    def __call__(self, name, group=None):
        t = time.perf_counter()
        yield
        self.ms[name] = (time.perf_counter() - t) * 1e3


def pair(name, **kw):
    torch.manual_seed(0)
    tv = VISUAL.build(name, **SAME_WORK, **kw)
    d2 = VISUAL.build(name, backend="detectron2", calibrate_bn=False, **SAME_WORK, **kw)
    d2.load_torchvision_backend_state(tv.state_dict())
    return tv, d2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--c4-proposals", type=int, default=300)
    p.add_argument("--only", default="fpn,c4")
    p.add_argument("--profile-backbone", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    nets = {"fpn": ("frcnn-r50-fpn", {}), "c4": ("butd-r101-c4", {"rpn_post_nms_top_n": args.c4_proposals})}
    wanted = args.only.split(",")
    unknown = [k for k in wanted if k not in nets]
    if unknown:
        p.error(f"invalid --only {','.join(unknown)!r}; accepted: a comma-separated list of {', '.join(nets)}")
    for key in wanted:
        name, kw = nets[key]
        tv, d2 = pair(name, **kw)
        x = tv.make_inputs(1, generator=torch.Generator().manual_seed(1), device="cpu")["pixel_values"]
        runs = {"torchvision": [], "detectron2": []}
        with torch.no_grad():
            for r in range(args.rounds):
                order = [("torchvision", tv), ("detectron2", d2)][:: 1 if r % 2 == 0 else -1]
                for label, m in order:
                    clock = Clock()
                    t = time.perf_counter()
                    out = m(x, stage=clock)
                    clock.ms["total"] = (time.perf_counter() - t) * 1e3
                    runs[label].append(clock.ms)
                    print(
                        f"{name} {label} round {r}: {clock.ms['total']:.0f} ms "
                        f"(proposals {out.extras['rpn_post_nms']}, kept {out.extras['det_kept']})",
                        flush=True,
                    )
        print(f"\n{name} at {tv.image_size}, 1 thread, {args.rounds} interleaved rounds, medians in ms")
        print(f"{'stage':<14}{'torchvision':>12}{'detectron2':>12}{'ratio':>8}")
        for stage in list(runs["torchvision"][0]):
            a = statistics.median(m[stage] for m in runs["torchvision"])
            b = statistics.median(m[stage] for m in runs["detectron2"])
            print(f"{stage:<14}{a:>12.1f}{b:>12.1f}{a / max(b, 1e-9):>8.2f}")
        print("raw totals:", {k: [round(m["total"]) for m in v] for k, v in runs.items()}, flush=True)
        if args.profile_backbone:
            profile_backbones(name, tv, d2, x)


def profile_backbones(name, tv, d2, x, rows: int = 8):
    """One profiled pass over each backbone (after one unprofiled pass), operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        images = tv.transform(x)  # the same normalised, padded input for both
        for label, backbone in (("torchvision", tv.backbone), ("detectron2", d2.model.backbone)):
            backbone(images)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                backbone(images)
            print(f"\n{name} {label} backbone, one profiled pass")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), flush=True)


if __name__ == "__main__":
    main()
