"""Checks made in the parent before any measurement: plugins first, --tiny everywhere, defaults, bounds."""

import json
import sys

import pytest

from vlpbench.cli import main
from vlpbench.errors import VlpbenchError
from vlpbench.harness.runner import RunSpec, build_target, preflight

PLUGIN = """
from toy import ToyArch, ToyConfig
from vlpbench.registry import ARCH
if "test-late-arch" not in ARCH:
    ARCH.register("test-late-arch", ToyArch, ToyConfig(), description="registered by a plugin", paper={"class": "d"})
"""
FAST = ["--iters", "2", "--min-time", "0", "--warmup", "0", "--no-flops"]


@pytest.fixture
def late_plugin(tmp_path, monkeypatch):
    (tmp_path / "late_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "late_plugin"
    sys.modules.pop("late_plugin", None)


def test_plugin_names_resolve_in_every_command(capsys, tmp_path, late_plugin):
    assert main(["list", "arch", "test-late*", "--plugin", late_plugin]) == 0
    assert "test-late-arch" in capsys.readouterr().out
    assert main(["describe", "test-late-arch", "--plugin", late_plugin]) == 0
    assert "registered by a plugin" in capsys.readouterr().out
    code = main(
        [
            "compare",
            "--plugin",
            late_plugin,
            "--arch",
            "test-late-arch",
            "--in-process",
            "--format",
            "json",
            "--out",
            str(tmp_path / "run"),
            *FAST,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert [r["arch"] for r in json.loads(out.out)] == ["test-late-arch"]


def test_tiny_applies_to_ad_hoc_combinations():
    tiny, _, cfg = build_target(RunSpec("grid-r50+bert-base-embed+co-attention", tiny=True))
    assert cfg.tiny and sum(p.numel() for p in tiny.parameters()) < 10e6  # the full-size one has ~259 M


def test_runspec_defaults_to_the_documented_single_thread():
    from vlpbench.harness.env import DEFAULT_THREADS

    assert RunSpec("vilt").threads == DEFAULT_THREADS == 1


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seed": 2**64}, "invalid seed"),
        ({"seed": -1}, "invalid seed"),
        ({"threads": 10**6}, "invalid thread count"),
        ({"workload": {"image_size": [10**5, 10**5]}}, r"100000x100000 at batch 1 cannot fit"),
        ({"batch_size": 10**5}, "at batch 100000 cannot fit"),
        ({"workload": {"depth": 3}}, "invalid workload key"),
    ],
)
def test_preflight_refuses_before_building(fields, message):
    with pytest.raises(VlpbenchError, match=message):
        preflight(RunSpec("vilt-b32", **fields))


def test_diff_of_runs_with_nothing_in_common_fails(capsys, tmp_path, toys):
    from vlpbench.harness.protocol import Protocol
    from vlpbench.harness.runner import run_many
    from vlpbench.store import RunDir

    fast = Protocol(warmup=0, min_iters=2, min_time_s=0.0, max_iters=2)
    runs = []
    for name, n in (("a", 4), ("b", 8)):
        run = RunDir.open(tmp_path / name, create=True)
        run_many(
            [RunSpec("test-toy-arch", protocol=fast, count_flops=False, workload={"text_len": n})], run, isolated=False
        )
        runs.append(str(run.path))
    capsys.readouterr()
    assert main(["diff", runs[0], runs[0]]) == 0
    capsys.readouterr()
    assert main(["diff", *runs, "--fail-above", "5"]) == 2  # a gate that compared nothing must not pass
    assert "no configuration is present in both runs" in capsys.readouterr().err


def test_an_allocation_the_machine_cannot_satisfy_is_one_error(monkeypatch):
    from vlpbench.harness import runner

    def oom(*a, **k):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 120000000000 bytes."
        )

    monkeypatch.setattr(runner, "_run_spec", oom)
    with pytest.raises(VlpbenchError, match="'vse-inf' ran out of memory at workload .*text_len.*--text-len"):
        runner.run_spec(RunSpec("vse-inf", workload={"text_len": 10**9}))

    def bug(*a, **k):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(runner, "_run_spec", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a real bug keeps its traceback
        runner.run_spec(RunSpec("vse-inf"))
