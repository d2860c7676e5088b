"""Table-driven bad input over every subcommand: exit 2, one line on stderr naming the value, no traceback.

Each case runs in process (``vlpbench.cli.main``), so the table stays fast; the measuring commands get
a fresh ``--out`` that must still not exist afterwards (every check happens before a run directory is
created or a measurement subprocess starts).  ``{name}`` in an argument is a fixture path below.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlpbench.cli import main
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_many
from vlpbench.store import RunDir

FAST = Protocol(warmup=0, min_iters=2, min_time_s=0.0, max_iters=2)
BIG = str(2**64)


def _toy_run(path: Path, **workload) -> RunDir:
    import toy

    toy.register_toys()
    run = RunDir.open(path, create=True)
    run_many([RunSpec("test-toy-arch", protocol=FAST, count_flops=False, workload=workload)], run, isolated=False)
    return run


def _copy_run(src: RunDir, dst: Path, edit) -> Path:
    """A copy of ``src`` whose one record file is rewritten by ``edit(path, record)``."""
    run = RunDir.open(dst, create=True)
    (p,) = src.record_files()
    rec = json.loads(p.read_text())
    target = run.record_path(rec["key"])
    target.write_text(p.read_text())
    edit(target, rec)
    return dst


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = _toy_run(root / "good")
    other = _toy_run(root / "other", image_size=[16, 16])  # no configuration in common with "good"
    f = root / "a-file.txt"
    f.write_text("not a directory\n")
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("x")
    (root / "empty-run").mkdir()
    RunDir.open(root / "empty-run", create=True)
    garbage = root / "garbage-run"
    garbage.mkdir()
    (garbage / "run.json").write_text("garbage{")
    wrong_types = _copy_run(good, root / "wrong-types", lambda p, r: p.write_text(json.dumps({**r, "stages": "x"})))
    binary = _copy_run(good, root / "binary", lambda p, r: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"))
    truncated = _copy_run(good, root / "truncated", lambda p, r: p.write_text(p.read_text()[:200]))
    moved = _copy_run(good, root / "moved", lambda p, r: p.rename(p.with_name("0123456789abcdef.json")))
    median = _copy_run(
        good,
        root / "bad-median",
        lambda p, r: p.write_text(json.dumps({**r, "total": {**r["total"], "median_ms": "fast"}})),
    )
    # checkpoints: truncated config.json, truncated safetensors, a CLIP folder given to ViLT
    cfg = root / "w-config"
    cfg.mkdir()
    (cfg / "config.json").write_text('{"model_type": "vi')
    st = root / "w-safetensors"
    st.mkdir()
    (st / "config.json").write_text('{"model_type": "vilt"}')
    (st / "model.safetensors").write_bytes((1000).to_bytes(8, "little") + b'{"a": {"dtype": "F32"')
    clip = root / "w-clip"
    clip.mkdir()
    (clip / "config.json").write_text('{"model_type": "clip"}')
    (clip / "model.safetensors").write_bytes(b"")
    plug = root / "plugins"
    plug.mkdir()
    (plug / "broken_plugin.py").write_text("def oops(:\n")
    sys.path.insert(0, str(plug))
    yield {
        "root": root,
        "file": f,
        "under_file": f / "sub",
        "ro": Path("/sys/vlpbench-test-out"),
        "good": good.path,
        "other": other.path,
        "not_run": root / "not-a-run",
        "empty_run": root / "empty-run",
        "garbage": garbage,
        "wrong_types": wrong_types,
        "binary": binary,
        "truncated": truncated,
        "moved": moved,
        "bad_median": median,
        "missing": root / "missing",
        "w_config": cfg,
        "w_safetensors": st,
        "w_clip": clip,
    }
    sys.path.remove(str(plug))


C = ["compare", "--arch", "vilt"]
S = ["sweep", "--arch", "vilt", "--axis", "image_size=224x224"]
T = ["train", "--arch", "vilt-small", "--run-dir", "{root}/train"]
D = ["train-detector", "--out", "{root}/det"]
E = ["eval", "--dataset", "coco", "--root", "{root}", "--weights", "{root}"]
ST = ["study", "--out", "{root}/study"]

CASES = [
    # ---- list / describe
    (["list", "gadgets"], "'gadgets'"),
    # ---- peak
    (["peak", "--threads", "0"], "thread count 0"),
    (["peak", "--threads", "many"], "many"),
    (["peak", "--device", "tpu"], "'tpu'"),
    (["list", "--plugin", "no_such_plugin"], "'no_such_plugin'"),
    (["list", "--plugin", "broken_plugin"], "'broken_plugin'"),
    (["list", "arch", "*", "extra"], "extra"),
    (["list", "--colour"], "--colour"),
    (["describe", "vilt-b99"], "'vilt-b99'"),
    (["describe"], "name"),
    (["describe", "vilt", "--plugin", "no_such_plugin"], "'no_such_plugin'"),
    (["describe", "test-toy-arch-not-there", "--plugin", "toy"], "'test-toy-arch-not-there'"),
    (["frobnicate"], "'frobnicate'"),
    # ---- compare: names
    (["compare", "--arch", "vilt,nope"], "'nope'"),
    (["compare", "--arch", ","], "nothing to compare"),
    (["compare"], "nothing to compare"),
    (["compare", "--text", "bert-base-embed"], "--visual"),
    (["compare", "--visual", "grid-r50", "--backend", "caffe"], "'caffe'"),
    (["compare", "--interaction", "co-attention"], "--visual"),
    (["compare", "--visual", "grid-r50", "--interaction", "fusion-9000"], "'fusion-9000'"),
    (["compare", "--visual", "nope-visual", "--interaction", "co-attention"], "'nope-visual'"),
    (["compare", "--visual", "grid-r50", "--text", "nope-text", "--interaction", "co-attention"], "'nope-text'"),
    (C + ["--head", "nope-head"], "'nope-head'"),
    (C + ["--plugin", "no_such_plugin"], "'no_such_plugin'"),
    (C + ["--plugin", "broken_plugin"], "'broken_plugin'"),
    (["compare", "--arch", "test-toy-arch-x", "--plugin", "toy"], "'test-toy-arch-x'"),
    # ---- compare: device and numerics
    (C + ["--device", "cuda:0"], "'cuda:0'"),
    (C + ["--device", "tpu"], "'tpu'"),
    (C + ["--dtype", "int8"], "'int8'"),
    (C + ["--dtype", "float16"], "'float16'"),
    (C + ["--tf32"], "tf32"),
    (C + ["--cudnn-benchmark"], "cudnn_benchmark"),
    (C + ["--iters", "0"], "iteration count 0"),
    (C + ["--iters", "-3"], "-3"),
    (C + ["--iters", "many"], "'many'"),
    (C + ["--max-iters", "0"], "0"),
    (C + ["--iters", "5", "--max-iters", "2"], "--max-iters 2"),
    (C + ["--min-time", "-1"], "'-1'"),
    (C + ["--min-time", "nan"], "'nan'"),
    (C + ["--min-time", "inf"], "'inf'"),
    (C + ["--warmup", "-1"], "warmup -1"),
    (C + ["--seed", "-1"], "seed -1"),
    (C + ["--seed", BIG], BIG),
    (C + ["--seed", "0x10"], "'0x10'"),
    (C + ["--threads", "0"], "thread count 0"),
    (C + ["--threads", "100000"], "100000"),
    (C + ["--batch-size", "0"], "batch size 0"),
    (C + ["--batch-size", "two"], "'two'"),
    (C + ["--batch-size", "100000"], "batch 100000"),
    (C + ["--text-len", "0"], "text length 0"),
    (C + ["--regions", "0"], "regions 0"),
    (C + ["--regions", "36"], "regions"),
    (C + ["--image-size", "0x10"], "'0x10'"),
    (C + ["--image-size", "axb"], "'axb'"),
    (C + ["--image-size", "1x2x3"], "'1x2x3'"),
    (C + ["--image-size", "100000x100000"], "100000x100000"),
    (C + ["--format", "xml"], "'xml'"),
    (C + ["--taxonomy-factor", "0.5"], "'0.5'"),
    (C + ["--taxonomy-factor", "x"], "'x'"),
    # ---- compare: weights and paths
    (C + ["--weights", "{missing}"], "missing"),
    (C + ["--weights", "{w_config}"], "config.json"),
    (C + ["--weights", "{w_safetensors}"], "model.safetensors"),
    (C + ["--weights", "{w_clip}"], "'clip'"),
    (["compare", "--arch", "pixelbert", "--weights", "{w_clip}"], "pixelbert"),
    (C + ["--out", "{file}"], "a-file.txt"),
    (C + ["--out", "{under_file}"], "a-file.txt"),
    (C + ["--out", "{ro}"], "/sys"),
    (C + ["--out", "{not_run}"], "not-a-run"),
    (C + ["--out", "{garbage}"], "run.json"),
    # ---- sweep
    (["sweep", "--axis", "regions=10"], "nothing to sweep"),
    (["sweep", "--arch", "vilt"], "--axis"),
    (["sweep", "--arch", "vilt", "--axis", "regions"], "'regions'"),
    (["sweep", "--arch", "vilt", "--axis", "depth=1,2"], "'depth'"),
    (["sweep", "--arch", "vilt", "--axis", "image_size=abc"], "'abc'"),
    (["sweep", "--arch", "vilt", "--axis", "text_len=0"], "'0'"),
    (["sweep", "--arch", "vilt", "--axis", "text_len=8,8"], "'8'"),
    (["sweep", "--arch", "vilt", "--axis", "text_len=8", "--axis", "text_len=16"], "twice"),
    (["sweep", "--arch", "vilt", "--axis", "regions=10"], "regions"),
    (["sweep", "--arch", "nope", "--axis", "text_len=8"], "'nope'"),
    (["sweep", "--visual", "nope", "--axis", "image_size=64x64"], "'nope'"),
    (["sweep", "--text", "nope", "--axis", "text_len=8"], "'nope'"),
    (["sweep", "--arch", "vilt", "--axis", "image_size=100000x100000"], "100000x100000"),
    (["sweep", "--arch", "vilt", "--axis", "batch_size=1,100000"], "batch 100000"),
    (S + ["--out", "{file}"], "a-file.txt"),
    (S + ["--out", "{ro}"], "/sys"),
    (S + ["--out", "{garbage}"], "run.json"),
    (S + ["--iters", "0"], "iteration count 0"),
    (S + ["--iters", "3", "--max-iters", "1"], "--max-iters 1"),
    (S + ["--seed", BIG], BIG),
    (S + ["--threads", "-2"], "-2"),
    (S + ["--plugin", "no_such_plugin"], "'no_such_plugin'"),
    (S + ["--dtype", "fp8"], "'fp8'"),
    # ---- diff
    (["diff", "{missing}", "{good}"], "missing"),
    (["diff", "{good}", "{not_run}"], "not-a-run"),
    (["diff", "{good}", "{garbage}"], "run.json"),
    (["diff", "{good}", "{wrong_types}"], "stages"),
    (["diff", "{good}", "{binary}"], "binary"),
    (["diff", "{good}", "{truncated}"], "truncated"),
    (["diff", "{good}", "{moved}"], "0123456789abcdef"),
    (["diff", "{good}", "{bad_median}"], "median_ms"),
    (["diff", "{good}", "{empty_run}"], "empty-run"),
    (["diff", "{good}", "{other}"], "no configuration"),
    (["diff", "{good}", "{other}", "--fail-above", "5"], "no configuration"),
    (["diff", "{good}", "{good}", "--alpha", "0"], "alpha 0"),
    (["diff", "{good}", "{good}", "--alpha", "1.5"], "1.5"),
    (["diff", "{good}", "{good}", "--fail-above", "-1"], "'-1'"),
    (["diff", "{good}", "{good}", "--fail-above", "lots"], "'lots'"),
    (["diff", "{good}"], "RUN_B"),
    # ---- report
    (["report", "{missing}"], "missing"),
    (["report", "{not_run}"], "not-a-run"),
    (["report", "{garbage}"], "run.json"),
    (["report", "{wrong_types}"], "stages"),
    (["report", "{binary}"], "binary"),
    (["report", "{truncated}"], "truncated"),
    (["report", "{moved}"], "0123456789abcdef"),
    (["report", "{bad_median}"], "median_ms"),
    (["report", "{empty_run}"], "empty-run"),
    (["report", "{good}", "--out", "{file}"], "a-file.txt"),
    (["report", "{good}", "--out", "{under_file}"], "a-file.txt"),
    (["report", "{good}", "--out", "{ro}"], "/sys"),
    (["report"], "RUN_DIR"),
    # ---- train
    (["train", "--arch", "nope", "--run-dir", "{root}/t"], "'nope'"),
    (["train", "--arch", "vilt-b32", "--run-dir", "{root}/t"], "'vilt-b32'"),
    (["train", "--arch", "vilt-small"], "--run-dir"),
    (T + ["--steps", "0"], "0"),
    (T + ["--steps", "-1"], "-1"),
    (T + ["--stop-after", "0"], "0"),
    (T + ["--stop-after", "-1"], "-1"),
    (T + ["--batch-size", "0"], "0"),
    (T + ["--lr", "0"], "'0'"),
    (T + ["--lr=-1e-3"], "'-1e-3'"),
    (T + ["--lr", "nan"], "'nan'"),
    (T + ["--checkpoint-every", "0"], "0"),
    (T + ["--seed", "-1"], "-1"),
    (T + ["--seed", BIG], BIG),
    (T + ["--threads", "0"], "0"),
    (T + ["--threads", "1000000"], "1000000"),
    (T + ["--n-train", "0"], "0"),
    (T + ["--detector", "{missing}"], "missing"),
    (["train", "--arch", "vilt-small", "--run-dir", "{file}"], "a-file.txt"),
    (["train", "--arch", "vilt-small", "--run-dir", "{ro}"], "/sys"),
    # ---- train-detector
    (D + ["--steps", "0"], "0"),
    (D + ["--steps", "-5"], "-5"),
    (D + ["--arch", "clip-small"], "'clip-small'"),
    (D + ["--arch", "vilt-b32"], "'vilt-b32'"),
    (D + ["--seed", BIG], BIG),
    (D + ["--threads", "0"], "0"),
    (D + ["--n-val", "0"], "0"),
    (D + ["--labels", "colour"], "'colour'"),
    (["train-detector", "--out", "{file}"], "a-file.txt"),
    (["train-detector", "--out", "{ro}"], "/sys"),
    (["train-detector"], "--out"),
    # ---- eval
    (["eval", "--dataset", "imagenet", "--root", "{root}", "--weights", "{root}"], "'imagenet'"),
    (["eval", "--dataset", "coco", "--root", "{missing}", "--weights", "{root}"], "missing"),
    (["eval", "--dataset", "coco", "--root", "{root}", "--weights", "{missing}"], "missing"),
    (E + ["--limit", "0"], "0"),
    (E + ["--limit", "-1"], "-1"),
    (E + ["--limit", "ten"], "'ten'"),
    (["eval", "--dataset", "coco"], "--root"),
    # ---- study
    (ST + ["--profile", "huge"], "'huge'"),
    (ST + ["--steps", "0"], "0"),
    (ST + ["--seeds", "a,b"], "'a,b'"),
    (ST + ["--seeds", "-1"], "'-1'"),
    (ST + ["--seeds", "1,1"], "'1,1'"),
    (ST + ["--arch", "vilt-b32"], "'vilt-b32'"),
    (ST + ["--arch", "nope"], "'nope'"),
    (ST + ["--jobs", "0"], "0"),
    (ST + ["--threads", "0"], "0"),
    (["study", "--out", "{file}"], "a-file.txt"),
    (["study", "--out", "{ro}"], "/sys"),
    # ---- study-table
    (["study-table", "{missing}", "--out", "{root}/table"], "missing"),
    (["study-table", "{root}", "--out", "{root}/table"], "a `vlpbench train` run directory"),
    (["study-table", "--out", "{root}/table"], "RUN_DIR"),
    (["study-table", "{root}"], "--out"),
    (["study-table", "{root}", "--out", "{file}"], "a-file.txt"),
]

MEASURING = ("compare", "sweep")


def _fill(argv, paths):
    return [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]


def test_the_table_covers_every_subcommand():
    from vlpbench.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands <= {argv[0] for argv, _ in CASES if argv} | {"frobnicate"}
    assert len(CASES) >= 100


@pytest.mark.parametrize("argv, named", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2(capsys, paths, argv, named, tmp_path):
    argv = _fill(argv, paths)
    fresh = tmp_path / "fresh-out"
    if argv[0] in MEASURING and "--out" not in argv:
        argv += ["--out", str(fresh)]
    code = main(argv)
    out = capsys.readouterr()
    err = out.err
    assert code == 2, (argv, out.out[-500:], err)
    assert "Traceback" not in err and err.count("\n") == 1 and err.endswith("\n"), err
    assert named in err, err
    assert not fresh.exists(), "a run directory was created before the input was checked"


def test_parse_errors_are_one_line_from_the_installed_command(paths):
    """End to end through the console entry point (a few cases only: a process start costs seconds)."""
    exe = Path(sys.executable).with_name("vlpbench")
    for argv, named in [
        (["compare", "--arch", "vilt", "--seed", BIG], BIG),
        (["diff", str(paths["good"]), str(paths["other"])], "no configuration"),
    ]:
        proc = subprocess.run(
            [str(exe), *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and named in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a mode-555 directory")
def test_read_only_directory_is_refused(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["compare", "--arch", "vilt", "--out", str(ro / "run")])
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and "not writable" in err and re.search(re.escape(str(ro)), err)
