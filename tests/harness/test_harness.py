"""The harness against fake clocks, injected CUDA events and small real modules (no speed asserts)."""

import math

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.harness.protocol import Measurement, Protocol, measure
from vlpbench.harness.stats import summarize
from vlpbench.harness.taxonomy import classify
from vlpbench.harness.timer import StageTimer
from vlpbench.stages import null_stage, scoped


class FakeClock:
    """A nanosecond clock that only moves when told to."""

    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t

    def advance_ms(self, ms):
        self.t += int(ms * 1e6)


def test_cpu_timer_nested_stages_and_closure():
    clock = FakeClock()
    timer = StageTimer("cpu", clock=clock)
    timer.begin_iteration()
    with timer.stage("visual.backbone", "VE"):
        clock.advance_ms(5)
    with timer.stage("visual.rpn", "VE"):
        with timer.stage("visual.rpn.head", "VE"):
            clock.advance_ms(2)
        with timer.stage("visual.rpn.nms", "VE"):
            clock.advance_ms(3)
        clock.advance_ms(1)  # work inside the parent but in no leaf
    with timer.stage("interaction.encoder", "MI"):
        clock.advance_ms(4)
    clock.advance_ms(0.5)  # outside every stage
    s = timer.end_iteration()
    assert s.total_ms == pytest.approx(15.5)
    assert s.stages["visual.rpn"] == pytest.approx(6)
    assert s.leaves == ["visual.backbone", "visual.rpn.head", "visual.rpn.nms", "interaction.encoder"]
    assert s.leaf_sum_ms == pytest.approx(14)
    assert s.groups["interaction.encoder"] == "MI"
    assert s.count == 5


def test_repeated_stage_names_are_summed():
    clock = FakeClock()
    timer = StageTimer("cpu", clock=clock)
    timer.begin_iteration()
    for _ in range(3):
        with timer.stage("layer", "MI"):
            clock.advance_ms(2)
    s = timer.end_iteration()
    assert s.stages == {"layer": pytest.approx(6)}


def test_timer_rejects_bad_group_and_unbalanced_use():
    timer = StageTimer("cpu")
    with pytest.raises(RuntimeError):
        with timer.stage("x"):
            pass
    timer.begin_iteration()
    with pytest.raises(ValueError, match="invalid stage group 'VX'"):
        with timer.stage("x", "VX"):
            pass
    timer.end_iteration()
    with pytest.raises(RuntimeError):
        timer.end_iteration()


class FakeEvent:
    """Stands in for torch.cuda.Event: records the fake clock; elapsed_time requires a prior sync."""

    log = []

    def __init__(self, clock, state):
        self.clock, self.state, self.t = clock, state, None

    def record(self):
        self.t = self.clock.t
        FakeEvent.log.append("record")

    def elapsed_time(self, end):
        if not self.state["synced"]:
            raise AssertionError("event read before synchronize")
        return (end.t - self.t) / 1e6


def test_cuda_path_bookkeeping_one_sync_per_iteration():
    clock = FakeClock()
    state = {"synced": False, "syncs": 0}

    def sync():
        state["synced"] = True
        state["syncs"] += 1

    timer = StageTimer("cuda", clock=clock, event_factory=lambda: FakeEvent(clock, state), synchronize=sync)
    for it in range(2):
        state["synced"] = False
        FakeEvent.log.clear()
        timer.begin_iteration()
        with timer.stage("visual.patch", "VE"):
            clock.advance_ms(1)
        with timer.stage("interaction.encoder", "MI"):
            clock.advance_ms(3)
        assert state["syncs"] == it, "no host synchronisation inside an iteration"
        s = timer.end_iteration()
        assert state["syncs"] == it + 1
        # begin + end of iteration, and two per stage
        assert FakeEvent.log.count("record") == 2 + 2 * 2
        assert s.stages["visual.patch"] == pytest.approx(1)
        assert s.total_ms == pytest.approx(4)


def test_measurement_with_fake_clock_stats_closure_and_overhead():
    clock = FakeClock()

    def fn(stage):
        with stage("a", "VE"):
            clock.advance_ms(2)
        with stage("b", "MI"):
            clock.advance_ms(3)
        clock.advance_ms(1)  # unaccounted

    p = Protocol(warmup=2, min_iters=4, min_time_s=0.0, max_iters=10)
    r = Measurement(fn, "cpu", p, clock=clock).run().result()
    assert r["total"]["n"] == 4 and len(r["total"]["samples_ms"]) == 4
    assert r["total"]["median_ms"] == pytest.approx(6)
    assert r["unaccounted_ms"] == pytest.approx(1)
    assert {s["name"]: s["median_ms"] for s in r["stages"]} == {"a": pytest.approx(2), "b": pytest.approx(3)}
    assert r["groups"]["VE"]["median_ms"] == pytest.approx(2)
    assert r["uninstrumented"]["median_ms"] == pytest.approx(6)
    assert r["overhead"]["measured_ms"] == pytest.approx(0)
    assert r["overhead"]["stage_entries_per_iter"] == 2


def test_protocol_min_time_drives_iteration_count():
    clock = FakeClock()

    def fn(stage):
        with stage("a", "VE"):
            clock.advance_ms(100)

    m = Measurement(fn, "cpu", Protocol(warmup=0, min_iters=2, min_time_s=1.0, max_iters=50), clock=clock).run()
    assert len(m.samples) == 10  # 10 x 100 ms reaches 1 s
    m = Measurement(fn, "cpu", Protocol(warmup=0, min_iters=2, min_time_s=100.0, max_iters=7), clock=clock).run()
    assert len(m.samples) == 7  # capped


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"min_iters": 0}, "iteration count 0"),
        ({"min_iters": -3}, "iteration count -3"),
        ({"warmup": -1}, "warmup -1"),
        ({"min_iters": 5, "max_iters": 2}, "max_iters 2"),
        ({"min_time_s": -1.0}, "min_time_s -1.0"),
    ],
)
def test_protocol_bad_values(kwargs, word):
    with pytest.raises(VlpbenchError, match=word):
        Protocol(**kwargs).validate()


def test_default_warmup_depends_on_device():
    assert Protocol().warmup_for("cpu") >= 3
    assert Protocol().warmup_for("cuda") >= 10


def test_summarize_statistics():
    x = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = summarize(x)
    assert s["n"] == 5 and s["median_ms"] == 3.0 and s["mean_ms"] == pytest.approx(22.0)
    assert s["iqr_ms"] == pytest.approx(2.0)
    assert s["noisy"] is True and s["cv"] > 1
    lo, hi = s["ci95_ms"]
    assert lo <= 3.0 <= hi
    assert s["samples_ms"] == x
    steady = summarize([10.0, 10.1, 9.9, 10.0, 10.05, 9.95])
    assert steady["noisy"] is False and steady["p99_ms"] <= 10.1
    assert summarize([5.0])["ci95_ms"] == [5.0, 5.0]
    with pytest.raises(ValueError):
        summarize([])


def test_real_module_closure_is_small():
    """On a real module whose leaves cover the work, unaccounted time is a small part of the total."""
    lin = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(4)])
    x = torch.randn(64, 256)

    def fn(stage):
        with torch.inference_mode():
            h = x
            for i, layer in enumerate(lin):
                with stage(f"layer{i}", "MI"):
                    h = layer(h)
        return h

    r = measure(fn, "cpu", Protocol(warmup=1, min_iters=5, min_time_s=0.0))
    assert [s["name"] for s in r["stages"]] == ["layer0", "layer1", "layer2", "layer3"]
    assert all(s["leaf"] for s in r["stages"])
    assert r["total"]["median_ms"] > 0
    assert abs(r["unaccounted_ms"]) < 0.5 * r["total"]["median_ms"]
    assert r["overhead"]["empty_stage_ms"] > 0


def test_scoped_stage_prefixes_and_groups():
    seen = []

    def stage(name, group=None):
        seen.append((name, group))
        from contextlib import nullcontext

        return nullcontext()

    s = scoped(stage, "visual", "VE")
    with s("backbone"):
        pass
    with s("image_tower", "MI"):
        pass
    assert seen == [("visual.backbone", "VE"), ("visual.image_tower", "MI")]
    assert scoped(null_stage, "visual", "VE") is null_stage
    with pytest.raises(ValueError):
        scoped(stage, "x", "bogus")


@pytest.mark.parametrize(
    "ve, te, mi, cls",
    [
        (100, 1, 1000, "d"),  # MI largest
        (900, 1, 15, "c"),  # VE largest, MI > TE
        (76, 46, 1, "b"),  # VE ~ TE, both > MI
        (900, 50, 1, "a"),  # VE >> TE > MI
        (1, 100, 1, "unclassified"),
    ],
)
def test_taxonomy_rule(ve, te, mi, cls):
    t = classify(ve, te, mi, factor=3.0, paper_class="c")
    assert t["class"] == cls
    assert math.isclose(t["VE_share"] + t["TE_share"] + t["MI_share"], 1.0)
    assert t["matches_paper"] == (cls == "c")
