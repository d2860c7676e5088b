"""Embedder latency at published input sizes (``make bench``).

Each preset is measured by the shared harness; pytest-benchmark times the forward without stage markers
(so ``pytest-benchmark compare`` works on its JSON) while the instrumented iterations that give the
per-stage breakdown run, untimed by pytest-benchmark, between its rounds.  Two medians therefore exist
per embedder, and both are labelled: ``embedders.md`` shows the instrumented one (stage markers on,
what the stage rows add up to) beside the no-marker one, and the JSON's ``extra_info`` carries both
(``median_ms_stage_markers``, ``median_ms_no_markers``) next to pytest-benchmark's own statistics.
"""

from __future__ import annotations

import math

import pytest

# (component, preset) per profile.  `default` took 7.6 minutes on 1 thread of the 2-core dev machine (README).
PROFILES = {
    "default": [
        ("visual", "butd-r101-c4"),
        ("visual", "frcnn-r50-fpn"),
        ("visual", "pixelbert-r50-grid"),
        ("visual", "grid-r50"),
        ("visual", "clip-rn50-visual"),
        ("visual", "vilt-b32-patch"),
        ("visual", "clip-vit-b32-patch"),
        ("text", "bert-base-embed"),
        ("text", "clip-text-b32"),
        ("text", "bigru-text"),
    ],
}
PROFILES["full"] = PROFILES["default"] + [("visual", "butd-r101-c4-600"), ("visual", "grid-r101")]
PROFILES["smoke"] = PROFILES["default"]
PROTOCOLS = {  # warm-up, min iterations, min seconds
    "default": (3, 5, 2.0),
    "full": (10, 20, 5.0),
    "smoke": (1, 2, 0.0),
}


def pytest_generate_tests(metafunc):
    if "preset" in metafunc.fixturenames:
        profile = metafunc.config.getoption("--vlpbench-profile")
        if profile not in PROFILES:
            raise pytest.UsageError(f"invalid --vlpbench-profile {profile!r}; accepted: {', '.join(PROFILES)}")
        metafunc.config._vlpbench_order = [name for _, name in PROFILES[profile]]
        metafunc.parametrize("preset", PROFILES[profile], ids=[n for _, n in PROFILES[profile]])


def region_backend(component: str, name: str, backend: str, tiny: bool = False):
    """Overrides putting a region-feature embedder (registry tag "region") on ``backend``; {} for the others.

    detectron2's C4 res5 head is made of bottleneck blocks, so the smoke profile's tiny C4 (a ResNet-18)
    moves to depth 50 on that backend: the smoke run checks the pipeline, not a size."""
    from vlpbench.presets import load_all
    from vlpbench.registry import VISUAL

    if backend not in ("torchvision", "detectron2"):
        raise pytest.UsageError(f"invalid --vlpbench-backend {backend!r}; accepted: torchvision, detectron2")
    load_all()
    if component != "visual" or "region" not in VISUAL.get(name).tags or backend == "torchvision":
        return {}
    config = VISUAL.get(name).make_config(tiny=tiny)
    if backend == "detectron2" and tiny and config.arch == "c4" and config.depth < 50:
        return {"backend": backend, "depth": 50}
    return {"backend": backend}


def test_embedder_latency(benchmark, preset, bench_options, bench_run, capsys):
    from vlpbench.harness.protocol import Protocol
    from vlpbench.harness.runner import RunSpec, run_spec

    component, name = preset
    warmup, min_iters, min_time = PROTOCOLS[bench_options["profile"]]
    spec = RunSpec(
        target=name,
        component=component,
        device=bench_options["device"],
        overrides=region_backend(component, name, bench_options["backend"], tiny=bench_options["profile"] == "smoke"),
        threads=bench_options["threads"],
        tiny=bench_options["profile"] == "smoke",
        protocol=Protocol(warmup=warmup, min_iters=min_iters, min_time_s=min_time),
    )
    benchmark.group = component
    benchmark.name = name
    with capsys.disabled():  # a progress line before the (possibly minutes-long) measurement starts
        print(
            f"\n[vlpbench] measuring {component} embedder {name} ({spec.threads} thread(s), "
            f"profile {bench_options['profile']})",
            flush=True,
        )

    def drive(m):
        per_iter_s = max(m.warmup_ms[-1] / 1e3, 1e-6) if m.warmup_ms else 1.0
        rounds = min(m.protocol.max_iters, max(m.protocol.min_iters, math.ceil(m.protocol.min_time_s / per_iter_s)))
        # setup (untimed by pytest-benchmark) runs an instrumented iteration before each timed plain one
        benchmark.pedantic(
            m.uninstrumented_iteration,
            setup=lambda: (m.instrumented_iteration(), None)[1],
            rounds=rounds,
            iterations=1,
            warmup_rounds=0,
        )

    record = run_spec(spec, drive=drive)
    bench_run.write(record)
    benchmark.extra_info.update(
        {
            "vlpbench_key": record["key"],
            "threads": record["env"]["threads"]["intra_op"],
            "params": record["params"]["total"],
            "flops": record["flops"]["total"],
            "workload": record["workload"],
            "median_ms_stage_markers": record["total"]["median_ms"],
            "median_ms_no_markers": (record.get("uninstrumented") or {}).get("median_ms"),
            "timed_by_pytest_benchmark": "the forward without stage markers",
        }
    )
    assert record["total"]["n"] >= min_iters
