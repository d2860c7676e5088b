"""Results store (atomic writes, schema, loader, resume) and the runner on a toy registered model."""

import json

import pytest

from toy import register_toys
from vlpbench.errors import VlpbenchError
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_isolated, run_many, run_spec
from vlpbench.store import SCHEMA, RunDir, atomic_write_json, load_frame, load_records, load_samples

FAST = Protocol(warmup=1, min_iters=3, min_time_s=0.0)


@pytest.fixture(autouse=True)
def toys():
    register_toys()


def spec(**kw):
    base = dict(target="test-toy-arch", protocol=FAST, threads=1)
    base.update(kw)
    return RunSpec(**base)


def test_record_schema_and_taxonomy():
    rec = run_spec(spec())
    assert rec["schema"] == SCHEMA and rec["kind"] == "latency"
    for key in ("arch", "config", "workload", "stages", "total", "unaccounted_ms", "params", "flops", "memory", "env"):
        assert key in rec
    assert [s["name"] for s in rec["stages"]] == ["visual.patch", "text.embed", "interaction.mix"]
    assert {s["group"] for s in rec["stages"]} == {"VE", "TE", "MI"}
    assert rec["env"]["threads"]["intra_op"] == 1
    assert rec["taxonomy"]["class"] in "abcd" or rec["taxonomy"]["class"] == "unclassified"
    assert rec["taxonomy"]["paper_class"] == "d"
    # FLOPs (2 per multiply-add, biases not counted): conv 2*T*(3*8*8)*64 + linear 2*(8+16)*64*64
    assert rec["flops"]["total"] == 2 * 16 * 192 * 64 + 2 * 24 * 64 * 64
    assert rec["flops"]["by_group"]["MI"] == 2 * 24 * 64 * 64
    assert rec["params"]["total"] > 0


def test_embedder_component_is_scoped_under_visual():
    rec = run_spec(spec(target="test-toy-visual", component="visual"))
    assert rec["stages"][0]["name"] == "visual.patch" and rec["stages"][0]["group"] == "VE"
    assert "taxonomy" not in rec
    assert rec["workload"]["measured.tokens"] == 16


def test_workload_applied_and_keyed():
    a, b = spec(), spec(workload={"image_size": [64, 64]})
    assert a.key() != b.key()
    assert spec(protocol=Protocol(min_iters=9)).key() == a.key()  # iteration counts are not identity
    rec = run_spec(b)
    assert rec["workload"]["image_size"] == [64, 64]
    with pytest.raises(VlpbenchError, match="no regions"):
        run_spec(spec(workload={"regions": 5}))
    with pytest.raises(VlpbenchError, match="invalid workload key"):
        run_spec(spec(workload={"pixels": 5}))


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"target": "nope"}, "unknown architecture 'nope'; accepted: .*test-toy-arch"),
        ({"device": "tpu"}, "invalid device 'tpu'"),
        ({"dtype": "int8"}, "invalid dtype 'int8'"),
        ({"dtype": "float16"}, "float16' is not supported on cpu"),
        ({"batch_size": 0}, "invalid batch size 0"),
        ({"threads": 0}, "invalid thread count 0"),
        ({"overrides": {"bogus": 1}}, "invalid option.*bogus"),
        ({"protocol": Protocol(min_iters=0)}, "invalid iteration count 0"),
    ],
)
def test_bad_specs(kw, msg):
    with pytest.raises(VlpbenchError, match=msg):
        run_spec(spec(**kw))


def test_cuda_requested_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(VlpbenchError, match="CUDA is not available"):
        spec(device="cuda").validate()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": Boom()})
    assert json.loads(p.read_text()) == {"a": 1}  # old content intact
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_run_dir_resume_skips_completed(tmp_path):
    run = RunDir.open(tmp_path / "run", create=True)
    specs = [spec(), spec(workload={"image_size": [48, 48]}), spec(batch_size=2)]
    calls = []

    def interrupt_after_first(event, s):
        calls.append(event)
        if event == "run" and calls.count("run") == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_many(specs, run, isolated=False, progress=interrupt_after_first)
    assert len(run.records()) == 1
    # a half-written record from a crash: a temp file and a truncated record file
    (run.path / f".{specs[1].key()}.json.tmp-abc").write_text("{")
    run.record_path(specs[1].key()).write_text('{"schema": "vlpbench.result/1", "kin')
    events = []
    recs = run_many(
        RunDir.open(run.path).path and specs,
        RunDir.open(run.path),
        isolated=False,
        progress=lambda e, s: events.append(e),
    )
    assert events == ["skip", "run", "run"]
    assert len(recs) == 3 and len(run.records()) == 3


def test_loader_frame_and_bad_dirs(tmp_path):
    run = RunDir.open(tmp_path / "run", create=True)
    run_many([spec(), spec(batch_size=2)], run, isolated=False)
    df = load_frame([run.path])
    assert set(df["stage"]) == {"visual.patch", "text.embed", "interaction.mix", "unaccounted", "total"}
    # medians do not add (on a busy machine not even roughly); each iteration's leaves + unaccounted do
    samples = load_samples([run.path])
    for _key, g in samples.groupby("key"):
        parts = g[g["leaf"]].groupby("iteration")["ms"].sum()
        total = g[g["stage"] == "total"].set_index("iteration")["ms"]
        assert parts.values == pytest.approx(total.loc[parts.index].values, rel=1e-9, abs=1e-9)
    rec_df = load_frame(run.path, level="record")
    assert len(rec_df) == 2 and "MI_median_ms" in rec_df
    with pytest.raises(VlpbenchError, match="not a vlpbench run directory"):
        load_records(tmp_path)
    empty = RunDir.open(tmp_path / "empty", create=True)
    with pytest.raises(VlpbenchError, match="no results"):
        load_records(empty.path)
    bad = run.path / "deadbeef.json"
    bad.write_text("{not json")
    with pytest.raises(VlpbenchError, match="deadbeef.json: corrupt"):
        load_records(run.path)
    bad.write_text(json.dumps({**json.loads(run.record_files()[0].read_text()), "schema": "vlpbench.result/9"}))
    with pytest.raises(VlpbenchError, match="schema version"):
        load_records(run.path)
    with pytest.raises(VlpbenchError, match="invalid run label"):
        RunDir.create("bad label!", root=tmp_path)


def test_isolated_subprocess_measures_exact_peak_rss():
    rec = run_isolated(spec(target="test-toy-visual", component="visual", plugins=["toy"]))
    assert rec["memory"]["method"] == "ru_maxrss" and rec["memory"]["rss_peak_mb"] > 0
    assert rec["env"]["allocator"]["GLIBC_TUNABLES"]


def test_isolated_user_error_is_a_clear_message():
    # Without the plugin the toy exists only in this process, so the subprocess reports an unknown name.
    with pytest.raises(VlpbenchError, match="unknown visual embedder 'test-toy-visual'"):
        run_isolated(spec(target="test-toy-visual", component="visual"))
    with pytest.raises(VlpbenchError, match="cannot import plugin module 'no_such_mod'"):
        run_isolated(spec(plugins=["no_such_mod"]))


def test_in_process_run_restores_thread_count():
    import torch

    before = torch.get_num_threads()
    rec = run_spec(spec(threads=1 if before != 1 else 2))
    assert rec["env"]["threads"]["intra_op"] != before
    assert torch.get_num_threads() == before
