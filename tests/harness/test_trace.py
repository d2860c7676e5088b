"""Profiler ranges per stage and the traced pass behind ``--trace DIR``."""

import json

import torch

from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_spec
from vlpbench.harness.timer import StageTimer
from vlpbench.harness.trace import trace_event_names

FAST = Protocol(warmup=1, min_iters=3, min_time_s=0.0)


def test_trace_file_holds_every_stage_of_the_record(tmp_path, toys):
    rec = run_spec(
        RunSpec(target="test-toy-arch", threads=1, protocol=FAST, count_flops=False, trace_dir=str(tmp_path / "traces"))
    )
    path = rec["trace"]["file"]
    assert path == str(tmp_path / "traces" / f"test-toy-arch-{rec['key']}.json")
    data = json.loads(open(path).read())  # a Chrome trace: {"traceEvents": [...]}
    names = set(trace_event_names(path))
    stages = [s["name"] for s in rec["stages"]]
    assert stages == ["visual.patch", "text.embed", "interaction.mix"]
    assert all(s in names for s in stages), sorted(names)[:40]
    # the stage ranges enclose the ops they ran: the conv of the patch stage lies inside its range
    ev = {e["name"]: e for e in data["traceEvents"] if e.get("ph") == "X"}
    patch, conv = ev["visual.patch"], next(e for n, e in ev.items() if "conv" in n)
    assert patch["ts"] <= conv["ts"] and conv["ts"] + conv["dur"] <= patch["ts"] + patch["dur"] + 1
    # the traced pass is not among the timed samples, and the key does not depend on tracing
    assert rec["total"]["n"] == 3
    assert rec["key"] == RunSpec(target="test-toy-arch", threads=1, protocol=FAST, count_flops=False).key()


def test_ranges_only_while_a_profiler_runs(monkeypatch):
    opened = []
    real = torch.profiler.record_function

    def spy(name, *a, **kw):
        opened.append(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(torch.profiler, "record_function", spy)
    monkeypatch.delenv("VLPBENCH_RANGES", raising=False)
    timer = StageTimer("cpu")

    def one_iteration():
        timer.begin_iteration()
        with timer.stage("visual.patch", "VE"):
            with timer.stage("visual.patch.proj", "VE"):
                pass
        return timer.end_iteration()

    one_iteration()
    assert opened == []  # the timed path opens no range
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        s = one_iteration()
    assert opened == ["visual.patch", "visual.patch.proj"] and s.leaves == ["visual.patch.proj"]
    opened.clear()
    monkeypatch.setenv("VLPBENCH_RANGES", "1")  # forced on, for Nsight Systems
    one_iteration()
    assert opened == ["visual.patch", "visual.patch.proj"]


def test_cuda_ranges_push_and_pop_nvtx(monkeypatch):
    pushed = []
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: pushed.append(("push", name)))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: pushed.append(("pop", None)))

    class Ev:
        def record(self):
            pass

        def elapsed_time(self, other):
            return 0.0

    timer = StageTimer("cuda", event_factory=Ev, synchronize=lambda: None, ranges=True)
    timer.begin_iteration()
    with timer.stage("interaction.encoder", "MI"):
        pass
    timer.end_iteration()
    assert pushed == [("push", "interaction.encoder"), ("pop", None)]
