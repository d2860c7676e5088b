"""``vlpbench peak`` and each stage's achieved GFLOP/s and share of the peak."""

import json

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.harness import peak as peakmod
from vlpbench.harness.env import cpu_model
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_spec


@pytest.fixture
def small_kernels(monkeypatch):
    monkeypatch.setattr(peakmod, "MATMUL_SIZES", (64, 128))
    monkeypatch.setattr(peakmod, "CONV_SHAPES", ((32, 64, 8),))


def test_measure_peak_takes_the_faster_kernel(small_kernels):
    res = peakmod.measure_peak(1, reps=3, min_s=0.0)
    assert res["threads"] == 1 and [k["kind"] for k in res["kernels"]] == ["matmul", "matmul", "conv1x1"]
    assert res["kernels"][1]["flop"] == 2 * 128**3
    assert res["peak_gflop_per_s"] == max(res["matmul_gflop_per_s"], res["conv1x1_gflop_per_s"]) > 0
    lib = "MKL/BLAS matmul" if res["peak_gflop_per_s"] == res["matmul_gflop_per_s"] else "oneDNN 1x1 conv"
    assert res["peak_source"].startswith(lib)


def test_peak_file_keeps_one_entry_per_cpu_device_threads(tmp_path, small_kernels):
    f = tmp_path / "peak.json"
    one = peakmod.measure_peak(1, reps=3, min_s=0.0)
    peakmod.save_peak(one, f)
    peakmod.save_peak({**one, "peak_gflop_per_s": 123.0}, f)  # same CPU and threads: replaced
    peakmod.save_peak({**one, "threads": 2}, f)
    entries = json.loads(f.read_text())["entries"]
    assert [e["threads"] for e in entries] == [1, 2]
    got = peakmod.load_peak(str(f), "cpu", 1)
    assert got["peak_gflop_per_s"] == 123.0 and got["file"] == str(f)
    assert peakmod.load_peak(str(f), "cpu", 4) is None
    with pytest.raises(VlpbenchError, match="peak file .*nope.json.* does not exist"):
        peakmod.load_peak(str(tmp_path / "nope.json"), "cpu", 1)


def test_record_stages_carry_gflops_and_peak_share(tmp_path, toys):
    f = tmp_path / "peak.json"
    peakmod.save_peak(
        {
            "kind": "peak",
            "device": "cpu",
            "cpu": cpu_model(),
            "threads": 1,
            "peak_gflop_per_s": 50.0,
            "peak_source": "oneDNN 1x1 conv (test)",
        },
        f,
    )
    rec = run_spec(
        RunSpec(
            target="test-toy-arch",
            threads=1,
            peak_file=str(f),
            protocol=Protocol(warmup=1, min_iters=3, min_time_s=0.0),
        )
    )
    by_stage = rec["flops"]["by_stage"]
    for st in rec["stages"]:
        if by_stage.get(st["name"]):
            want = by_stage[st["name"]] / 1e9 / (st["median_ms"] / 1e3)
            assert st["gflop_per_s"] == pytest.approx(want) and st["peak_share"] == pytest.approx(want / 50.0)
        else:
            assert st["gflop_per_s"] is None and st["peak_share"] is None
    patch = next(s for s in rec["stages"] if s["name"] == "visual.patch")
    assert patch["gflop_per_s"] > 0  # a conv: counted FLOPs
    eff = rec["efficiency"]
    assert eff["peak_gflop_per_s"] == 50.0 and eff["peak_source"] == "oneDNN 1x1 conv (test)"
    assert eff["total_peak_share"] == pytest.approx(eff["total_gflop_per_s"] / 50.0)


def test_no_peak_file_leaves_share_empty_but_rate_present(tmp_path, toys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no reports/peak.json here
    rec = run_spec(RunSpec(target="test-toy-arch", threads=1, protocol=Protocol(warmup=0, min_iters=3, min_time_s=0)))
    assert rec["efficiency"]["peak_gflop_per_s"] is None
    assert next(s for s in rec["stages"] if s["name"] == "visual.patch")["peak_share"] is None
    assert rec["efficiency"]["total_gflop_per_s"] > 0


def test_peak_cli(tmp_path, small_kernels, capsys):
    from vlpbench.cli import main

    out = tmp_path / "p.json"
    assert main(["peak", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GFLOP/s from" in text and "mm 128x128x128" in text and "conv1x1 32->64" in text
    assert json.loads(out.read_text())["entries"][0]["threads"] == 1
    assert main(["peak", "--threads", "0", "--out", str(out)]) == 2
    assert "invalid thread count 0" in capsys.readouterr().err
