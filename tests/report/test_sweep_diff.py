"""Sweeps (axis parsing, resume after an interrupt, curves) and run-to-run diffs (ratio, significance, exit codes).

A toy architecture with an extra-work knob, registered here under a test-only name, gives a known
slowdown: run B repeats the interaction ``work`` times more than run A, with the same workload, so
the two records pair up by arch + workload although their keys (which include the config) differ.
The toy is not an ``ArchConfig`` composition, so it is swept along batch size only; workload axes
are swept on real presets here and in test_report.py.
"""

from __future__ import annotations

import json

import pytest

from toy import ToyArch, ToyConfig
from vlpbench import cli
from vlpbench.errors import VlpbenchError
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_many
from vlpbench.registry import ARCH
from vlpbench.report import diff as diffmod
from vlpbench.report.sweep import curves, fastest_stage, parse_axis, run_sweep, sweep_specs
from vlpbench.store import RunDir

TOY = "test-sweepdiff-toy"
FAST = Protocol(min_iters=3, min_time_s=0, warmup=1)


def _register():
    if TOY not in ARCH:
        ARCH.register(
            TOY,
            ToyArch,
            ToyConfig(dim=192, text_len=48, attention=True),
            description="test-only toy with a work knob",
            tiny=dict(dim=64),
            paper={"class": "d"},
        )


@pytest.fixture(scope="module", autouse=True)
def toy():
    from vlpbench.presets import load_all

    load_all()  # so run_spec's own load_all() finds the registry already populated
    _register()
    return TOY


def _cli(argv, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("reporting",))
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- sweep -----------------------------------------------------------------------------------------
def test_parse_axis():
    assert parse_axis("image_size=224x224,384x640") == ("image_size", [[224, 224], [384, 640]])
    assert parse_axis("text_len=8,16,40") == ("text_len", [8, 16, 40])
    assert parse_axis("batch-size=1,2") == ("batch_size", [1, 2])
    for bad in ("width=1,2", "text_len=", "image_size=224", "regions=0,3", "text_len=8,8"):
        with pytest.raises(VlpbenchError):
            parse_axis(bad)


def test_sweep_resumes_after_interrupt(tmp_path):
    # one thread and 4x the interaction work, so the mix stage's growth stands well above the noise
    base = RunSpec(
        "", protocol=Protocol(min_iters=5, min_time_s=0, warmup=1), tiny=True, threads=1, overrides={"work": 4}
    )
    specs = sweep_specs([(TOY, "arch")], [("batch_size", [1, 4, 16])], base)
    assert [(s.workload, s.batch_size) for s in specs] == [({}, 1), ({}, 4), ({}, 16)]
    run = RunDir.open(tmp_path / "sweep", create=True)
    events = []

    def stop_after_first(event, spec):
        events.append((event, spec.batch_size))
        if len([e for e in events if e[0] == "run"]) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, run, isolated=False, show_progress=False, progress=stop_after_first)
    assert len(run.records()) == 1

    events.clear()
    recs = run_sweep(
        specs, run, isolated=False, show_progress=False, progress=lambda e, s: events.append((e, s.batch_size))
    )
    assert events == [("skip", 1), ("run", 4), ("run", 16)]
    assert len(run.records()) == 3 and len(recs) == 3

    (c,) = curves(run.records())
    assert c.axis == "batch_size" and c.xs == [1.0, 4.0, 16.0]
    assert [r["workload"]["batch_size"] for r in c.records] == [1, 4, 16]
    assert fastest_stage(c)[0] == "interaction.mix"  # by far the most work per sample


def test_sweep_cli_writes_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli-sweep"
    argv = [
        "sweep",
        "--arch",
        TOY,
        "--axis",
        "batch_size=1,2",
        "--tiny",
        "--in-process",
        "--iters",
        "3",
        "--min-time",
        "0",
        "--warmup",
        "1",
        "--out",
        str(out),
    ]
    code, stdout, err = _cli(argv, monkeypatch, capsys)
    assert code == 0, err
    assert "2 points" in stdout and "measuring" in err  # tqdm bar on stderr names the point
    recs = RunDir(out).records()
    assert sorted(r["workload"]["batch_size"] for r in recs) == [1, 2]
    assert json.loads((out / "run.json").read_text())["sweep"]["axes"] == [["batch_size", [1, 2]]]
    code, _, err = _cli(argv, monkeypatch, capsys)
    assert code == 0 and "recorded" in err and len(RunDir(out).records()) == 2

    code, _, err = _cli(
        [
            "sweep",
            "--visual",
            "vilt-b32-patch",
            "--axis",
            "regions=1,2",
            "--tiny",
            "--in-process",
            "--out",
            str(tmp_path / "x"),
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "has no regions" in err


# -- diff ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    # one thread: on a shared, oversubscribed machine OpenMP barriers between two threads can cost more
    # than the toy's work; 16x the work makes the injected slowdown dwarf what noise is left
    proto = Protocol(min_iters=10, min_time_s=0.2, warmup=2)
    a = RunDir.open(root / "a", create=True)
    b = RunDir.open(root / "b", create=True)
    run_many(
        [
            RunSpec(TOY, tiny=True, threads=1, protocol=proto, overrides={"work": 1}),
            RunSpec(TOY, tiny=True, threads=1, batch_size=2, protocol=FAST),
        ],
        a,
        isolated=False,
    )
    run_many(
        [
            RunSpec(TOY, tiny=True, threads=1, protocol=proto, overrides={"work": 16}),
            RunSpec(TOY, tiny=True, threads=1, batch_size=3, protocol=FAST),
        ],
        b,
        isolated=False,
    )
    return a.path, b.path


def test_diff_detects_injected_slowdown(two_runs):
    a, b = two_runs
    d = diffmod.diff_runs(a, b, stages=True)
    totals = [r for r in d.rows if r.stage == "total"]
    assert len(totals) == 1
    (row,) = totals
    ra = next(r for r in RunDir(a).records() if r["workload"]["batch_size"] == 1)
    rb = next(r for r in RunDir(b).records() if r["workload"]["batch_size"] == 1)
    assert row.matched_by == "arch+workload"
    assert row.a_ms == ra["total"]["median_ms"] and row.b_ms == rb["total"]["median_ms"]
    assert row.ratio == pytest.approx(rb["total"]["median_ms"] / ra["total"]["median_ms"])
    assert row.ratio > 2 and row.significant and row.p < 0.05
    assert {r.stage for r in d.rows} >= {"interaction.mix", "visual.patch"}
    assert len(d.only_a) == 1 and "B=2" in d.only_a[0]
    assert len(d.only_b) == 1 and "B=3" in d.only_b[0]
    # the same run against itself: matched by key, ratio 1, nothing significant
    same = diffmod.diff_runs(a, a)
    assert all(r.matched_by == "key" and r.ratio == 1.0 and not r.significant for r in same.rows)


def test_diff_cli_fail_above(two_runs, monkeypatch, capsys):
    a, b = map(str, two_runs)
    code, out, err = _cli(["diff", a, b, "--fail-above", "20"], monkeypatch, capsys)
    assert code == 1 and "slower" in err and "only in run A" in out and "B/A" in out
    code, out, _ = _cli(["diff", a, b, "--fail-above", "100000"], monkeypatch, capsys)
    assert code == 0
    code, _, _ = _cli(["diff", b, a, "--fail-above", "20"], monkeypatch, capsys)  # a speed-up never fails
    assert code == 0


def test_diff_warns_on_different_machines(two_runs, tmp_path, monkeypatch, capsys):
    a, _ = two_runs
    other = RunDir.open(tmp_path / "other-host", create=True)
    for rec in RunDir(a).records():
        rec["env"]["host"] = "some-other-host"
        rec["env"]["threads"] = {"intra_op": 16, "inter_op": 16}
        other.write(rec)
    code, _, err = _cli(["diff", str(a), str(other.path)], monkeypatch, capsys)
    assert code == 0
    assert "runs differ in host" in err and "some-other-host" in err and "runs differ in threads" in err


def test_bad_inputs_give_one_line_and_exit_2(two_runs, tmp_path, monkeypatch, capsys):
    a, _ = two_runs
    empty = RunDir.open(tmp_path / "empty", create=True)
    notrun = tmp_path / "plain"
    notrun.mkdir()
    future = RunDir.open(tmp_path / "future", create=True)
    rec = RunDir(a).records()[0]
    rec["schema"] = "vlpbench.result/2"
    (future.path / "x.json").write_text(json.dumps(rec))
    cases = [
        (["diff", str(a), str(empty.path)], "no results"),
        (["diff", str(a), str(notrun)], "not a vlpbench run directory"),
        (["diff", str(a), str(future.path)], "schema version"),
        (["report", str(empty.path), "--out", str(tmp_path / "r")], "no results"),
        (["report", str(notrun), "--out", str(tmp_path / "r")], "not a vlpbench run directory"),
        (["report", str(future.path), "--out", str(tmp_path / "r")], "schema version"),
    ]
    for argv, msg in cases:
        code, _, err = _cli(argv, monkeypatch, capsys)
        assert code == 2, argv
        assert msg in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_too_few_samples_are_called_out():
    assert diffmod.min_p(3, 3) == pytest.approx(0.1)
    assert diffmod.min_p(10, 10) < 0.05
    rec = {
        "kind": "latency",
        "key": "k",
        "arch": "x",
        "component": "arch",
        "workload": {"batch_size": 1},
        "env": {},
        "stages": [],
        "total": {"median_ms": 1.0, "samples_ms": [1.0, 1.1, 0.9]},
    }
    d = diffmod.diff_records([rec], [rec])
    assert any("cannot reach p < 0.05" in w for w in d.warnings)
    assert not d.rows[0].significant
