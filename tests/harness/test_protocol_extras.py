"""Progress lines, stopping by precision, the paired overhead CI, the dry-run stage recorder, machine state."""

import io

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.harness import env as envmod
from vlpbench.harness.progress import Progress
from vlpbench.harness.protocol import NOT_RESOLVABLE, Measurement, Protocol, paired_overhead
from vlpbench.stages import RecordingStage, record_stages, scoped


class FakeClock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t

    def advance_ms(self, ms):
        self.t += int(ms * 1e6)


def test_progress_lines_between_iterations():
    clock = FakeClock()
    out = io.StringIO()
    seen_during = []

    def fn(stage):
        seen_during.append(out.getvalue().count("\n"))
        with stage("a", "VE"):
            clock.advance_ms(1000)  # a slow model: 1 s a forward

    p = Protocol(warmup=2, min_iters=4, min_time_s=0.0, max_iters=10, uninstrumented=False)
    prog = Progress("toy", stream=out, every_s=0.0)
    Measurement(fn, "cpu", p, clock=clock, progress=prog).run()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("vlpbench: toy warm-up 1/2, elapsed")
    timed = [ln for ln in lines if "timed iteration" in ln]
    assert [ln.split("timed iteration ")[1].split(",")[0] for ln in timed] == ["1/4", "2/4", "3/4", "4/4"]
    assert "elapsed 3.0 s" in timed[0] and "~3.0 s left" in timed[0]  # 2 warm-up + 1 timed s; 3 x 1 s to go
    assert timed[-1].endswith("~0.0 s left")
    # no line is ever written while a forward runs: the count only moves between calls
    assert seen_during == sorted(seen_during)


def test_progress_is_throttled_but_prints_first_and_last():
    out = io.StringIO()
    now = [0.0]
    prog = Progress("x", stream=out, every_s=10.0, clock=lambda: now[0])
    for i in range(1, 6):
        now[0] += 1.0
        prog.update("timed iteration", i, 5, now[0], 1.0)
    assert [ln.split()[4] for ln in out.getvalue().splitlines()] == ["1/5,", "5/5,"]


def test_progress_reaches_stderr_in_a_run(capsys, toys):
    from vlpbench.harness.runner import RunSpec, run_spec

    run_spec(
        RunSpec(
            target="test-toy-arch",
            threads=1,
            count_flops=False,
            progress=True,
            protocol=Protocol(warmup=1, min_iters=3, min_time_s=0.0),
        )
    )
    err = capsys.readouterr().err
    assert "vlpbench: test-toy-arch timed iteration 3/3" in err and "elapsed" in err


def test_target_ci_stops_when_precise_and_records_it():
    clock = FakeClock()

    def steady(stage):
        with stage("a", "VE"):
            clock.advance_ms(10)

    p = Protocol(warmup=0, min_iters=5, min_time_s=0.0, max_iters=500, target_ci=0.02)
    r = Measurement(steady, "cpu", p, clock=clock).run().result()
    assert r["precision"]["reached"] is True and r["precision"]["stopped_by"] == "target_ci"
    assert r["total"]["n"] == 5 and r["precision"]["ci_rel"] == 0.0


def test_target_ci_gives_up_at_max_iters_and_says_so():
    clock = FakeClock()
    k = [0]

    def noisy(stage):
        k[0] += 1
        with stage("a", "VE"):
            clock.advance_ms(10 if k[0] % 2 else 30)  # two modes: the median's CI stays wide

    p = Protocol(warmup=0, min_iters=5, min_time_s=0.0, max_iters=12, target_ci=0.01, uninstrumented=False)
    r = Measurement(noisy, "cpu", p, clock=clock).run().result()
    assert r["precision"]["reached"] is False and r["precision"]["stopped_by"] == "max_iters"
    assert r["total"]["n"] == 12 and r["precision"]["ci_rel"] > 0.01


def test_target_ci_time_cap():
    clock = FakeClock()
    k = [0]

    def noisy(stage):
        k[0] += 1
        with stage("a", "VE"):
            clock.advance_ms(100 if k[0] % 2 else 300)

    p = Protocol(
        warmup=0, min_iters=3, min_time_s=0.0, max_iters=10_000, target_ci=0.001, max_time_s=5.0, uninstrumented=False
    )
    m = Measurement(noisy, "cpu", p, clock=clock).run()
    assert m.stopped_by == "max_time" and 5.0 <= m._spent_s() < 5.4


@pytest.mark.parametrize(
    "kw, word",
    [({"target_ci": 0}, "target CI 0"), ({"target_ci": 1.5}, "target CI 1.5"), ({"max_time_s": -1}, "max_time_s -1")],
)
def test_precision_options_bad_values(kw, word):
    with pytest.raises(VlpbenchError, match=word):
        Protocol(**kw).validate()


def test_paired_overhead_resolvable_and_not():
    steady = [(10.0 + 0.01 * i + 0.5, 10.0 + 0.01 * i) for i in range(20)]  # +0.5 ms every pair
    o = paired_overhead(steady)
    assert o["resolvable"] is True and o["paired_ms"] == pytest.approx(0.5)
    assert o["paired_ci95_ms"][0] > 0 and o["paired_pct"] == pytest.approx(100 * 0.5 / 10.095, rel=1e-3)
    noise = [(10.0 + (1 if i % 2 else -1), 10.0) for i in range(20)]  # +-1 ms, no real cost
    o = paired_overhead(noise)
    assert o["resolvable"] is False and o["verdict"] == NOT_RESOLVABLE
    assert o["paired_ci95_ms"][0] < 0 < o["paired_ci95_ms"][1]


def test_measurement_pairs_alternate_order_and_feed_the_overhead():
    clock = FakeClock()
    order = []

    def fn(stage):
        order.append("plain" if stage.__name__ == "null_stage" else "inst")
        with stage("a", "VE"):
            clock.advance_ms(5)

    p = Protocol(warmup=0, min_iters=4, min_time_s=0.0)
    r = Measurement(fn, "cpu", p, clock=clock).run().result()
    assert order == ["inst", "plain", "plain", "inst", "inst", "plain", "plain", "inst"]
    assert r["overhead"]["paired_n"] == 4 and r["overhead"]["paired_ms"] == pytest.approx(0)
    assert r["overhead"]["empty_stage_ms"] >= 0 and "estimated_ms" in r["overhead"]


def test_recording_stage_leaves_groups_and_repeats():
    def forward(stage):
        with stage("visual.rpn", "VE"):
            with stage("visual.rpn.head", "VE"):
                pass
            with stage("visual.rpn.nms", "VE"):
                pass
        for _ in range(3):
            inner = scoped(stage, "interaction", "MI")
            with inner("layer"):
                pass

    rec = record_stages(forward)
    assert isinstance(rec, RecordingStage)
    assert rec.names == ["visual.rpn", "visual.rpn.head", "visual.rpn.nms", "interaction.layer"]
    assert rec.leaves == ["visual.rpn.head", "visual.rpn.nms", "interaction.layer"]
    assert rec.groups["interaction.layer"] == "MI" and len(rec.calls) == 6


def test_machine_state_and_busy_flag():
    s = envmod.machine_state()
    assert set(s) == {"load_avg", "ram"} and len(s["load_avg"]) == 3
    assert s["ram"]["total_gib"] > 0 and 0 < s["ram"]["available_gib"] <= s["ram"]["total_gib"]
    quiet, loaded = {"load_avg": [0.5, 0.5, 0.5]}, {"load_avg": [3.2, 1.0, 1.0]}
    assert envmod.busy_flag(quiet, quiet, threads=1) is False
    assert envmod.busy_flag(quiet, loaded, threads=2) is True
    assert envmod.busy_flag(quiet, loaded, threads=4) is False
    assert envmod.busy_flag({"load_avg": None}, {"load_avg": None}, threads=1) is None


def test_record_env_carries_machine_state(toys):
    from vlpbench.harness.runner import RunSpec, run_spec

    rec = run_spec(
        RunSpec(
            target="test-toy-arch",
            threads=1,
            count_flops=False,
            protocol=Protocol(warmup=0, min_iters=3, min_time_s=0.0),
        )
    )
    env = rec["env"]
    for k in ("os", "numpy", "cpu_freq", "machine", "busy"):
        assert k in env
    assert env["machine"]["before"]["load_avg"] is not None and env["machine"]["after"]["ram"]["total_gib"] > 0
    assert env["busy"] == envmod.busy_flag(env["machine"]["before"], env["machine"]["after"], 1)
    assert set(env["cpu_freq"]) == {"cur_mhz", "max_mhz", "governor"}
    assert rec["overhead"]["paired_n"] == 3 and "resolvable" in rec["overhead"]
    assert rec["precision"]["target_ci"] is None
