"""The interleaving and ratio CI of ``make bench-transformers`` (benchmarks/bench_vs_transformers.py)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return _load()


def test_rounds_alternate_order(bench):
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b"), lambda: calls.append("c")]
    samples = bench._interleaved(fns, 3)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")  # one untimed call each, then ABBA
    assert [len(x) for x in samples] == [3, 3, 3]


def test_ratio_ci_from_paired_rounds(bench):
    ours = [8.0, 9.0, 10.0, 11.0, 12.0] * 4
    theirs = [10.0, 11.25, 12.5, 13.75, 15.0] * 4  # every round ours / theirs = 0.8
    r, lo, hi = bench.ratio_with_ci(ours, theirs)
    assert r == pytest.approx(0.8) and lo == pytest.approx(0.8) and hi == pytest.approx(0.8)
    r, lo, hi = bench.ratio_with_ci([1.0, 2.0, 1.0, 2.0, 1.5], [1.0] * 5)
    assert lo <= r <= hi and hi > lo


def _load():
    spec = importlib.util.spec_from_file_location(
        "bench_vs_transformers", ROOT / "benchmarks" / "bench_vs_transformers.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bf16_leg_is_off_by_default(monkeypatch):
    monkeypatch.delenv("VLPBENCH_BF16", raising=False)
    assert _load().BF16 is False
    monkeypatch.setenv("VLPBENCH_BF16", "1")
    assert _load().BF16 is True
    assert "BF16 ?= 0" in (ROOT / "Makefile").read_text()
