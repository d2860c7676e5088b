"""The record schema: the typed shape and the run-time check agree, and every wrong field is named."""

import copy

import pytest

from vlpbench import schema
from vlpbench.errors import VlpbenchError
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_spec

FAST = Protocol(warmup=0, min_iters=2, min_time_s=0.0, max_iters=2)


@pytest.fixture(scope="module")
def record():
    import toy

    toy.register_toys()
    return run_spec(RunSpec("test-toy-arch", protocol=FAST))


def test_a_measured_record_passes(record):
    assert schema.check(record, "r.json") is record
    assert record["flops"]["total"] > 0 and "taxonomy" in record


def _typed_keys(td) -> set:
    return set(td.__annotations__)


def _spec_keys(spec) -> set:
    return {k.lstrip("?") for k in spec if k != "*"}


@pytest.mark.parametrize(
    "typed, spec",
    [
        (schema.ResultRecord, {**schema.LATENCY, **schema.ACCURACY}),
        (schema.Stats, schema.STATS),
        (schema.StageStats, schema.STAGE),
        (schema.Flops, schema.FLOPS),
    ],
)
def test_typed_shape_and_runtime_check_name_the_same_fields(typed, spec):
    assert _typed_keys(typed) == _spec_keys(spec)


def test_taxonomy_shape_matches_the_classifier():
    from vlpbench.harness.taxonomy import classify

    out = classify(10.0, 1.0, 5.0, 3.0, paper_class="c")
    assert _spec_keys(schema.TAXONOMY) <= set(out)
    assert schema._check(out, schema.TAXONOMY, "taxonomy") is None


def _set(rec, path, value):
    node = rec
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("stages",), "x", "stages is 'x' (str); accepted: a JSON list"),
        (("stages", 0, "median_ms"), "1.0", "stages[0].median_ms is '1.0' (str); accepted: a number"),
        (("stages", 0, "leaf"), 1, "stages[0].leaf is 1 (int); accepted: true or false"),
        (("stages", 0, "name"), KeyError, "stages[0].name is missing"),
        (("stages", 0, "samples_ms"), [1.0, "x"], "stages[0].samples_ms[1] is 'x'"),
        (("total",), [], "total is [] (list); accepted: a JSON object"),
        (("total", "n"), 2.5, "total.n is 2.5 (float); accepted: an integer"),
        (("total", "median_ms"), float("nan"), "total.median_ms is nan"),
        (("total", "ci95_ms"), [1.0, "a"], "total.ci95_ms[1]"),
        (("groups", "VE"), 3, "groups.VE is 3 (int); accepted: a JSON object"),
        (("flops", "total"), "many", "flops.total is 'many'"),
        (("flops", "not_counted", "aten.add"), "x", "flops.not_counted.aten.add is 'x'"),
        (("params", "total"), True, "params.total is True (bool); accepted: an integer"),
        (("taxonomy", "class"), 4, "taxonomy.class is 4 (int); accepted: a string"),
        (("env",), "cpu", "env is 'cpu' (str); accepted: a JSON object"),
        (("workload",), None, "workload is None (null); accepted: a JSON object"),
        (("arch",), 7, "arch is 7 (int); accepted: a string"),
        (("unaccounted_ms",), "0", "unaccounted_ms is '0'"),
    ],
)
def test_each_wrong_field_is_named(record, path, value, message):
    bad = copy.deepcopy(record)
    _set(bad, path, value)
    with pytest.raises(VlpbenchError) as info:
        schema.check(bad, "runs/x/abc.json")
    assert str(info.value).startswith("runs/x/abc.json: ") and message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "rec, message",
    [
        ([], "expected a JSON object, found list"),
        ({"schema": "vlpbench.result/1"}, "lacks kind, key, arch"),
        (
            {"schema": "other/1", "kind": "latency", "key": "k", "arch": "a", "config": {}, "workload": {}, "env": {}},
            "is not a vlpbench result",
        ),
        (
            {
                "schema": "vlpbench.result/2",
                "kind": "latency",
                "key": "k",
                "arch": "a",
                "config": {},
                "workload": {},
                "env": {},
            },
            "not supported",
        ),
        (
            {
                "schema": "vlpbench.result/1",
                "kind": "speed",
                "key": "k",
                "arch": "a",
                "config": {},
                "workload": {},
                "env": {},
            },
            "kind 'speed' unknown",
        ),
        (
            {
                "schema": "vlpbench.result/1",
                "kind": "latency",
                "key": "k",
                "arch": "a",
                "config": {},
                "workload": {},
                "env": {},
            },
            "latency record lacks stages",
        ),
        (
            {
                "schema": "vlpbench.result/1",
                "kind": "accuracy",
                "key": "k",
                "arch": "a",
                "config": {},
                "workload": {},
                "env": {},
                "metrics": {"qa": "high"},
            },
            "metrics.qa is 'high' (str); accepted: a number, null or a JSON object",
        ),
    ],
)
def test_record_level_problems(rec, message):
    with pytest.raises(VlpbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        schema.check(rec, "f.json")


def test_an_accuracy_record_needs_no_latency_fields():
    rec = {
        "schema": schema.SCHEMA,
        "kind": "accuracy",
        "key": "acc",
        "arch": "vilt-small",
        "config": {},
        "workload": {},
        "env": {},
        "metrics": {"qa": {"mean": 0.5, "std": 0.1}},
        "seeds": [0, 1],
    }
    assert schema.check(rec) is rec


def test_check_key_refuses_a_record_under_another_name(record):
    schema.check_key(record, record["key"], "x.json")
    with pytest.raises(VlpbenchError, match="holds the record of key"):
        schema.check_key(record, "0" * 16, "0000000000000000.json")


def test_every_registered_paper_fact_has_its_type():
    from vlpbench.presets import load_all
    from vlpbench.registry import REGISTRIES

    load_all()
    n = 0
    for kind, reg in REGISTRIES.items():
        for e in reg.entries():
            schema.check_paper(e.paper, f"{kind} {e.name!r}")
            n += bool(e.paper)
    assert n > 10


@pytest.mark.parametrize(
    "paper, message",
    [
        ({"class": "e"}, "paper class 'e'"),
        ({"time_ms": "fast"}, "paper.time_ms is 'fast'"),
        ({"params_M": None}, "paper.params_M is None"),
        ({"patch_size": 32.5}, "paper.patch_size is 32.5"),
        ({"image_size": "big"}, "paper.image_size"),
        ({"tokens": 40}, "paper.tokens is 40"),
    ],
)
def test_bad_paper_facts_are_refused_at_registration(paper, message):
    from dataclasses import dataclass

    from vlpbench.registry import Registry

    @dataclass(frozen=True)
    class Cfg:
        x: int = 1

    with pytest.raises(VlpbenchError, match=message.replace("(", r"\(")):
        Registry("test").register("thing", lambda c: None, Cfg(), paper=paper)
