"""Our transformer family against transformers' reference models, same run, same inputs, batch 1.

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
        .venv/bin/python -m pytest benchmarks/bench_vs_transformers.py -q

* ViLT-B/32: our patch projection + BERT embeddings + single-stream interaction vs ``ViltModel``
  (default ``ViltConfig``, eager attention, the only one it has): 40 tokens + 384x640, all patches.
* CLIP ViT-B/32: our patch + ln_pre, CLIP text tower and dual encoder vs ``CLIPModel`` (default SDPA):
  224x224 + 77 tokens.

Random (seeded) weights, fp32, ``torch.inference_mode``; threads from ``--vlpbench-threads`` or
``VLPBENCH_THREADS`` (default: the harness default),
rounds from ``VLPBENCH_ROUNDS`` (default 15).  The last test measures ours and theirs in alternation (the
order flipping every round, ABBA) and prints the median of the per-round ratios ours / theirs with its
bootstrap 95% CI; it asserts nothing about speed (speed varies with the machine's load), only that both
sides ran.  ``VLPBENCH_BF16=1`` adds ours under CPU bf16 autocast as a third leg (off by default: it is
the slowest leg).  ``make bench-transformers`` runs this file (``BF16=1`` for the bf16 leg).
"""

from __future__ import annotations

import os

import pytest
import torch

from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.harness.env import DEFAULT_THREADS
from vlpbench.presets import load_all

load_all()
THREADS = int(os.environ.get("VLPBENCH_THREADS", DEFAULT_THREADS))
ROUNDS = int(os.environ.get("VLPBENCH_ROUNDS", "15"))
BF16 = os.environ.get("VLPBENCH_BF16", "0") == "1"
MEDIANS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _threads(request):
    global THREADS
    THREADS = request.config.getoption("--vlpbench-threads", default=None) or THREADS
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vilt_pair():
    from transformers import ViltConfig, ViltModel

    torch.manual_seed(0)
    ours = VLPModel.from_config(ArchConfig("vilt-b32-patch", "bert-base-embed", "single-stream")).eval()
    theirs = ViltModel._from_config(ViltConfig(max_image_length=-1), attn_implementation="eager").eval()
    inputs = ours.make_inputs(1, generator=torch.Generator().manual_seed(0))
    h, w = inputs["pixel_values"].shape[-2:]
    assert (h, w) == (384, 640) and inputs["input_ids"].shape == (1, 40)
    their_inputs = dict(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"].long(),
        pixel_values=inputs["pixel_values"],
        pixel_mask=torch.ones(1, h, w, dtype=torch.long),
    )
    return (lambda: ours(**inputs)), (lambda: theirs(**their_inputs))


@pytest.fixture(scope="module")
def clip_pair():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    ours = VLPModel.from_config(ArchConfig("clip-vit-b32-patch", "clip-text-b32", "dual-encoder")).eval()
    theirs = CLIPModel(CLIPConfig()).eval()  # ViT-B/32 defaults, SDPA attention
    inputs = ours.make_inputs(1, generator=torch.Generator().manual_seed(0))
    assert inputs["pixel_values"].shape[-2:] == (224, 224) and inputs["input_ids"].shape == (1, 77)
    their_inputs = dict(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"].long(),
        pixel_values=inputs["pixel_values"],
    )
    return (lambda: ours(**inputs)), (lambda: theirs(**their_inputs))


def _measure(benchmark, key: str, fn) -> None:
    def call():
        with torch.inference_mode():
            return fn()

    benchmark.group = key.split("/")[0]
    benchmark.extra_info.update(threads=THREADS, glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        MEDIANS[key] = benchmark.stats.stats.median


def test_vilt_ours(benchmark, vilt_pair):
    _measure(benchmark, "vilt-b32/ours", vilt_pair[0])


def test_vilt_transformers(benchmark, vilt_pair):
    _measure(benchmark, "vilt-b32/transformers", vilt_pair[1])


def test_clip_ours(benchmark, clip_pair):
    _measure(benchmark, "clip-vit-b32/ours", clip_pair[0])


def test_clip_transformers(benchmark, clip_pair):
    _measure(benchmark, "clip-vit-b32/transformers", clip_pair[1])


def _interleaved(fns, rounds):
    """Per-round ms of each callable, measured in alternation so drift hits every side alike; the order
    reverses every round (ABBA) so that no side always runs right after another."""
    import time

    samples = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:  # one untimed call each
            fn()
        for r in range(rounds):
            order = list(range(len(fns))) if r % 2 == 0 else list(reversed(range(len(fns))))
            for i in order:
                t0 = time.perf_counter_ns()
                fns[i]()
                samples[i].append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def ratio_with_ci(ours, theirs):
    """Median of the per-round ratios ours / theirs and its bootstrap 95% CI (rounds are paired in time)."""
    import numpy as np

    from vlpbench.harness.stats import median_ci

    ratios = [a / b for a, b in zip(ours, theirs)]
    lo, hi = median_ci(ratios)
    return float(np.median(ratios)), lo, hi


def test_ratios(capsys, vilt_pair, clip_pair):
    """Ratios ours / transformers from interleaved rounds, with a CI (the per-side pytest-benchmark medians
    above run in blocks, one after another, and drift between blocks on a shared machine). With
    VLPBENCH_BF16=1 also ours under CPU bf16 autocast, a different precision, reported beside the fp32
    ratio, never instead of it."""
    import numpy as np

    lines = [
        f"threads={THREADS} rounds={ROUNDS} bf16_leg={BF16} "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')} load_avg={os.getloadavg()}"
    ]
    for model, (ours, theirs) in (("vilt-b32", vilt_pair), ("clip-vit-b32", clip_pair)):

        def ours_bf16(ours=ours):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ours()

        samples = _interleaved([ours, theirs] + ([ours_bf16] if BF16 else []), ROUNDS)
        o, t = (float(np.median(x)) for x in samples[:2])
        assert o > 0 and t > 0 and all(len(x) == ROUNDS for x in samples)
        r, lo, hi = ratio_with_ci(samples[0], samples[1])
        line = (
            f"{model}: ours {o:.1f} ms, transformers {t:.1f} ms, ratio ours/theirs {r:.3f} "
            f"(95% CI {lo:.3f}-{hi:.3f}, {ROUNDS} interleaved rounds; goal <= 0.9)"
        )
        if BF16:
            b = float(np.median(samples[2]))
            rb, blo, bhi = ratio_with_ci(samples[2], samples[1])
            line += f"; ours under bf16 autocast {b:.1f} ms ({rb:.3f} x theirs in fp32, CI {blo:.3f}-{bhi:.3f})"
        lines.append(line)
        if f"{model}/ours" in MEDIANS:
            ratio = MEDIANS[f"{model}/ours"] / MEDIANS[f"{model}/transformers"]
            lines.append(f"  block medians (pytest-benchmark): ratio {ratio:.3f}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
