"""The measurement options of compare / sweep: --trace, --variant, --target-ci, progress; bad values."""

import json

import pytest

from vlpbench.cli import main
from vlpbench.harness.trace import trace_event_names

FAST = ["--tiny", "--iters", "3", "--min-time", "0", "--warmup", "1", "--no-flops"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_trace_variant_target_ci_and_progress(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "compare",
        "--arch",
        "vilt",
        "--in-process",
        "--out",
        str(tmp_path / "run"),
        "--trace",
        str(tmp_path / "traces"),
        "--target-ci",
        "0.5",
        "--format",
        "json",
        *FAST,
    )
    assert code == 0, err
    (rec,) = json.loads(out)
    names = set(trace_event_names(rec["trace"]["file"]))
    assert rec["trace"]["file"].startswith(str(tmp_path / "traces"))
    assert all(s["name"] in names for s in rec["stages"])
    assert rec["precision"]["target_ci"] == 0.5 and rec["precision"]["stopped_by"] in (
        "target_ci",
        "max_time",
        "max_iters",
    )
    assert "vlpbench: vilt-b32 timed iteration" in err
    code, out, err = run(
        capsys,
        "compare",
        "--arch",
        "vilt",
        "--in-process",
        "--out",
        str(tmp_path / "run"),
        "--variant",
        "jit-freeze",
        "--no-progress",
        "--format",
        "json",
        *FAST,
    )
    assert code == 0, err
    assert "timed iteration" not in err
    (frozen,) = json.loads(out)
    assert frozen["variant"]["name"] == "jit-freeze" and frozen["key"] != rec["key"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "onnx"], "invalid variant 'onnx'; accepted: eager, jit-freeze, inductor"),
        (["--variant", "cuda-graphs"], "'cuda-graphs' needs a CUDA device"),
        (["--target-ci", "2"], "invalid target CI 2.0; accepted: a fraction in \\(0, 1\\)"),
        (["--max-time", "0"], "invalid --max-time '0'"),
    ],
)
def test_bad_measurement_options(capsys, tmp_path, argv, message):
    import re

    code, out, err = run(capsys, "compare", "--arch", "vilt", "--out", str(tmp_path / "r"), *argv)
    assert code == 2 and re.search(message, err), err
    assert "Traceback" not in err and err.count("\n") == 1
