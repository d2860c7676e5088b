"""Fault injection: what a kill, a corrupt file or a second writer does to a run directory.

* SIGKILL of a sweep at several moments, then the same command again: the run ends with exactly the
  configuration keys of an uninterrupted run, no half-written or hidden leftovers, and no ``vlpbench-*``
  temporary directory (each sweep gets its own TMPDIR, so other work on the machine cannot interfere);
* a parent killed alone takes its measuring worker with it;
* a corrupted-record matrix (truncated, binary, wrong types, a record under another key's file name):
  readers name the file, resume re-measures exactly the broken configuration;
* concurrent writers: processes creating one new run directory at once all succeed, and two processes
  measuring the same configurations into one directory measure each configuration once (claims);
* a training run killed between checkpoints resumes with one log line per step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_many
from vlpbench.report.sweep import sweep_specs
from vlpbench.store import RunDir

TESTS = Path(__file__).resolve().parent
FAST = Protocol(warmup=0, min_iters=2, min_time_s=0.0, max_iters=2)
# a toy sweep whose points take about a second each in their own worker process
SWEEP = [
    "sweep",
    "--arch",
    "test-toy-arch",
    "--plugin",
    "toy",
    "--axis",
    "text_len=4,8,12,16",
    "--iters",
    "3",
    "--min-time",
    "0.3",
    "--warmup",
    "0",
    "--no-flops",
    "--no-progress",
]


def _env(tmp: Path) -> dict:
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


def _vlpbench(*argv: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vlpbench", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(cond, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _expected_keys() -> set:
    import toy  # noqa: F401  (registers the toy architecture)

    base = RunSpec(
        "",
        threads=1,
        protocol=Protocol(warmup=0, min_iters=3, min_time_s=0.3, max_iters=200),
        count_flops=False,
        plugins=["toy"],
    )
    return {s.key() for s in sweep_specs([("test-toy-arch", "arch")], [("text_len", [4, 8, 12, 16])], base)}


def _assert_clean(run: Path, tmp: Path, keys: set) -> None:
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(["run.json", *(f"{k}.json" for k in keys)]), names
    assert {p.stem for p in RunDir(run).record_files()} == keys
    assert all(r["key"] == Path(p).stem for r, p in zip(RunDir(run).records(), RunDir(run).record_files(), strict=True))
    assert not list(tmp.glob("vlpbench-*")), list(tmp.iterdir())


# ---- SIGKILL of a sweep --------------------------------------------------------------------------------
def _kill_at(moment: str, run: Path, proc: subprocess.Popen) -> None:
    """SIGKILL the sweep's parent and its worker at ``moment``."""
    if moment == "start":
        time.sleep(0.5)
    elif moment == "first-worker":
        _wait_for(lambda: _children(proc.pid) or proc.poll() is not None, timeout=600)
    elif moment.startswith("after-"):
        n = int(moment.split("-")[1])
        _wait_for(lambda: len(list(run.glob("[0-9a-f]*.json"))) >= n or proc.poll() is not None, timeout=600)
    for pid in [*_children(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["start", "first-worker", "after-1", "after-3"])
def test_killed_sweep_resumes_to_the_uninterrupted_keys(tmp_path, moment):
    run, tmp = tmp_path / "run", tmp_path / "tmp"
    env = _env(tmp)
    proc = _vlpbench(*SWEEP, "--out", str(run), env=env)
    _kill_at(moment, run, proc)
    resumed = _vlpbench(*SWEEP, "--out", str(run), env=env)
    try:
        _, err = resumed.communicate(timeout=900)
    finally:
        resumed.kill()
    assert resumed.returncode == 0, err
    _assert_clean(run, tmp, _expected_keys())


def test_killed_parent_takes_its_worker_and_leaves_nothing(tmp_path):
    run, tmp = tmp_path / "run", tmp_path / "tmp"
    env = _env(tmp)
    proc = _vlpbench(
        "compare",
        "--arch",
        "test-toy-arch",
        "--plugin",
        "toy",
        "--iters",
        "100000",
        "--max-iters",
        "100000",
        "--min-time",
        "600",
        "--no-flops",
        "--out",
        str(run),
        env=env,
    )
    try:
        _wait_for(lambda: _children(proc.pid) or proc.poll() is not None, timeout=600)
        workers = _children(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone
        proc.wait(timeout=30)
    assert workers, proc.communicate()[1]
    assert _wait_for(lambda: not any(_alive(w) for w in workers), timeout=30), "the worker outlived its parent"
    assert [p.name for p in run.iterdir() if not p.name.startswith(".")] == ["run.json"]
    assert not list(tmp.glob("vlpbench-*"))


# ---- corrupted records -------------------------------------------------------------------------------------
def _truncate(p: Path, rec: dict) -> None:
    p.write_text(p.read_text()[: len(p.read_text()) // 2])


def _binary(p: Path, rec: dict) -> None:
    p.write_bytes(bytes(range(256)))


def _wrong_types(p: Path, rec: dict) -> None:
    p.write_text(json.dumps({**rec, "stages": "x"}))


def _wrong_stat(p: Path, rec: dict) -> None:
    p.write_text(json.dumps({**rec, "total": {**rec["total"], "n": "five"}}))


def _other_key(p: Path, rec: dict, other: dict) -> None:
    p.write_text(json.dumps(other))


CORRUPTIONS = {
    "truncated": (_truncate, "corrupt result file"),
    "binary": (_binary, "not UTF-8"),
    "wrong types": (_wrong_types, "stages is 'x' (str); accepted: a JSON list"),
    "wrong stat type": (_wrong_stat, "total.n is 'five' (str); accepted: an integer"),
    "another key's file": (_other_key, "holds the record of key"),
}


@pytest.fixture
def toy_run(tmp_path, toys):
    specs = [RunSpec("test-toy-arch", protocol=FAST, count_flops=False, workload={"text_len": n}) for n in (4, 8)]
    run = RunDir.open(tmp_path / "run", create=True)
    run_many(specs, run, isolated=False)
    return run, specs


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_record_is_named_and_remeasured(toy_run, kind):
    run, specs = toy_run
    broken, intact = run.record_path(specs[0].key()), run.read(specs[1].key())
    corrupt, message = CORRUPTIONS[kind]
    rec = json.loads(broken.read_text())
    corrupt(broken, rec, intact) if corrupt is _other_key else corrupt(broken, rec)
    with pytest.raises(VlpbenchError, match=re.escape(message)) as info:
        run.records()
    assert str(broken) in str(info.value)
    assert [r["key"] for r in run.records(strict=False)] == [specs[1].key()]
    assert not run.has(specs[0].key()) and run.has(specs[1].key())
    events = []
    recs = run_many(specs, run, isolated=False, progress=lambda e, s: events.append((e, s.key())))
    assert events == [("run", specs[0].key()), ("skip", specs[1].key())]
    assert [r["key"] for r in recs] == [s.key() for s in specs]
    assert {r["key"] for r in run.records()} == {s.key() for s in specs}


def test_the_writer_refuses_a_malformed_record(toy_run):
    run, specs = toy_run
    rec = run.read(specs[0].key())
    with pytest.raises(VlpbenchError, match=r"stages\[0\]\.median_ms is None"):
        run.write({**rec, "stages": [{**rec["stages"][0], "median_ms": None}]})
    assert run.read(specs[0].key()) == rec  # untouched


# ---- concurrent writers ----------------------------------------------------------------------------------
OPEN_RACE = textwrap.dedent("""
    import sys
    from vlpbench.store import RunDir
    root = sys.argv[1]
    for i in range(int(sys.argv[2])):
        RunDir.open(f"{root}/r{i}", create=True, label="race")
""")


def test_concurrent_creation_of_one_new_run_directory_always_succeeds(tmp_path):
    env = _env(tmp_path / "tmp")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_RACE, str(tmp_path), "300"], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    for i in range(300):
        assert RunDir.open(tmp_path / f"r{i}").info["label"] == "race"


SHARED = textwrap.dedent("""
    import json, sys
    import toy
    from vlpbench.harness.protocol import Protocol
    from vlpbench.harness.runner import RunSpec, run_many
    from vlpbench.store import RunDir
    p = Protocol(warmup=0, min_iters=2, min_time_s=0.3, max_iters=1000)
    specs = [RunSpec("test-toy-arch", protocol=p, count_flops=False, workload={"text_len": n}) for n in range(4, 8)]
    events = []
    recs = run_many(specs, RunDir.open(sys.argv[1], create=True), isolated=False,
                    progress=lambda e, s: events.append(e))
    print(json.dumps({"events": events, "keys": [r["key"] for r in recs]}))
""")


def test_two_processes_into_one_run_measure_each_configuration_once(tmp_path):
    env = _env(tmp_path / "tmp")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARED, str(tmp_path / "run")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert results[0]["keys"] == results[1]["keys"] and len(set(results[0]["keys"])) == 4
    runs = sum(r["events"].count("run") for r in results)
    assert runs == 4, results  # claimed configurations are left to the other process, then read
    assert len(RunDir(tmp_path / "run").records()) == 4
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_claim_is_exclusive_and_released(tmp_path):
    run = RunDir.open(tmp_path / "run", create=True)
    with run.claim("k") as mine:
        assert mine
        with run.claim("k") as again:  # a second holder (another open file description) is refused
            assert not again
    with run.claim("k") as mine:
        assert mine
    assert not list(run.path.glob(".k.lock"))


def test_record_files_get_the_usual_mode(tmp_path, toy_run):
    run, specs = toy_run
    old = os.umask(0o027)
    try:
        from vlpbench.store import atomic_write_text

        p = atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o640
    assert run.record_path(specs[0].key()).stat().st_mode & 0o777 == 0o666 & ~old


# ---- training log after a kill -----------------------------------------------------------------------------
def test_training_log_keeps_one_line_per_step_after_a_kill(tmp_path):
    from vlpbench.presets import load_all
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.training import DataSpec, TrainConfig, train

    load_all()
    spec = DataSpec(n_train=24, n_val=8, n_test=8)
    cfg = TrainConfig(
        arch="vilt-small", tiny=True, steps=4, batch_size=4, data=spec, progress=False, checkpoint_every=2
    )
    data = SyntheticData(spec.dataset_config())
    train(cfg, str(tmp_path), data=data, stop_after=2)
    log = tmp_path / "train_log.jsonl"
    # what a kill after step 3 (checkpoint at 2) leaves: step 3 logged, then a torn line
    log.write_text(log.read_text() + json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    train(cfg, str(tmp_path), data=data)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


def test_resume_removes_what_a_killed_measurer_left(toy_run):
    run, specs = toy_run
    key = specs[0].key()
    for leftover in (f".{key}.lock", f".{key}.json.tmp-abc123", f".{key}.json.error"):
        (run.path / leftover).write_text("")  # a measurer killed after writing its record leaves these
    run_many(specs, run, isolated=False)
    assert not [p.name for p in run.path.iterdir() if p.name.startswith(".")]
