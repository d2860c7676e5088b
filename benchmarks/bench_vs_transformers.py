"""Our transformer family against transformers' reference models, same run, same inputs, batch 1.

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
        .venv/bin/python -m pytest benchmarks/bench_vs_transformers.py -q

* ViLT-B/32: our patch projection + BERT embeddings + single-stream interaction vs ``ViltModel``
  (default ``ViltConfig``, eager attention, the only one it has): 40 tokens + 384x640, all patches.
* CLIP ViT-B/32: our patch + ln_pre, CLIP text tower and dual encoder vs ``CLIPModel`` (default SDPA):
  224x224 + 77 tokens.

Random (seeded) weights, fp32, ``torch.inference_mode``; threads from ``--vlpbench-threads`` or
``VLPBENCH_THREADS`` (default: the harness default),
rounds from ``VLPBENCH_ROUNDS`` (default 15).  The last test measures ours and theirs in alternation and
prints the median ratios ours / theirs; it asserts nothing about speed (speed varies with the machine's
load), only that both sides ran.  ``make bench-transformers`` runs this file.
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
    their_inputs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"].long(),
                        pixel_values=inputs["pixel_values"], pixel_mask=torch.ones(1, h, w, dtype=torch.long))
    return (lambda: ours(**inputs)), (lambda: theirs(**their_inputs))


@pytest.fixture(scope="module")
def clip_pair():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    ours = VLPModel.from_config(ArchConfig("clip-vit-b32-patch", "clip-text-b32", "dual-encoder")).eval()
    theirs = CLIPModel(CLIPConfig()).eval()  # ViT-B/32 defaults, SDPA attention
    inputs = ours.make_inputs(1, generator=torch.Generator().manual_seed(0))
    assert inputs["pixel_values"].shape[-2:] == (224, 224) and inputs["input_ids"].shape == (1, 77)
    their_inputs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"].long(),
                        pixel_values=inputs["pixel_values"])
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
    """Median ms of each callable, measured in alternation (ABAB...) so drift hits every side alike."""
    import time

    samples = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:  # one untimed call each
            fn()
        for _ in range(rounds):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter_ns()
                fn()
                samples[i].append((time.perf_counter_ns() - t0) / 1e6)
    return [sorted(x)[len(x) // 2] for x in samples], samples


def test_ratios(capsys, vilt_pair, clip_pair):
    """Ratios ours / transformers from interleaved rounds (the per-side pytest-benchmark medians above run in
    blocks, one after another, and drift between blocks on a shared machine). Also ours under CPU bf16
    autocast, a different precision, reported beside the fp32 ratio, never instead of it."""
    lines = [f"threads={THREADS} rounds={ROUNDS} GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"]
    for model, (ours, theirs) in (("vilt-b32", vilt_pair), ("clip-vit-b32", clip_pair)):
        def ours_bf16(ours=ours):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ours()

        (o, t, b), _ = _interleaved([ours, theirs, ours_bf16], ROUNDS)
        assert o > 0 and t > 0
        lines.append(f"{model}: ours {o:.1f} ms, transformers {t:.1f} ms, ratio ours/theirs {o / t:.3f} "
                     f"(target <= 0.9); ours under bf16 autocast {b:.1f} ms ({b / t:.3f} x theirs in fp32)")
        if f"{model}/ours" in MEDIANS:
            ratio = MEDIANS[f"{model}/ours"] / MEDIANS[f"{model}/transformers"]
            lines.append(f"  block medians (pytest-benchmark): ratio {ratio:.3f}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
