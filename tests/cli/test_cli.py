"""The command line: list, describe, compare (formats, resume, bad input with exit status 2)."""

import json

import pytest

from vlpbench.cli import main

FAST = ["--tiny", "--iters", "2", "--min-time", "0", "--warmup", "1", "--threads", "1", "--no-flops"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_and_describe(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in ("vilt-b32", "clip-vit-b32", "butd-r101-c4", "single-stream", "bert-base-embed", "vqa"):
        assert name in out
    code, out, _ = run(capsys, "list", "arch", "clip*")
    assert code == 0 and "clip-rn50" in out and "vilt-b32" not in out
    code, out, _ = run(capsys, "describe", "vilt")
    assert code == 0
    assert "stages: visual.patch_embed" in out and "interaction.encoder" in out
    assert "parameters:" in out and "paper (reference, not measured)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["list", "gadgets"], "invalid kind 'gadgets'"),
        (["describe", "vilt-b99"], "unknown name 'vilt-b99'; accepted: .*vilt-b32"),
        (["compare", "--arch", "vilt,nope"], "unknown architecture 'nope'; accepted: .*clip"),
        (["compare", "--arch", "vilt", "--device", "cuda:0"], "CUDA is not available|does not exist"),
        (["compare", "--arch", "vilt", "--iters", "0"], "invalid iteration count 0"),
        (["compare", "--arch", "vilt", "--dtype", "int8"], "invalid dtype 'int8'"),
        (["compare", "--arch", "vilt", "--format", "xml"], "invalid format 'xml'"),
        (["compare", "--arch", "vilt", "--batch-size", "-1"], "invalid batch size -1"),
        (["compare", "--arch", "vilt", "--regions", "0"], "invalid regions 0"),
        (["compare", "--interaction", "vse-gpo"], "needs both --visual and --interaction"),
        (
            ["compare", "--visual", "grid-r50", "--backend", "caffe"],
            "invalid backend 'caffe'; accepted: torchvision, detectron2",
        ),
        (["compare", "--visual", "grid-r50", "--interaction", "fusion-9000"], "unknown interaction 'fusion-9000'"),
        (["compare"], "nothing to compare"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, argv, message, tmp_path):
    import re

    code, out, err = run(capsys, *argv, "--out", str(tmp_path / "r")) if argv[0] == "compare" else run(capsys, *argv)
    assert code == 2
    assert re.search(message, err), err
    assert "Traceback" not in err and err.count("\n") == 1


def test_compare_formats_and_resume(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "compare", "--arch", "vilt,clip", "--in-process", "--out", str(out_dir), "--format", "json", *FAST
    )
    assert code == 0, err
    records = json.loads(out)
    assert [r["arch"] for r in records] == ["vilt-b32", "clip-vit-b32"]
    for r in records:
        assert r["schema"] == "vlpbench.result/1"
        assert set(r["taxonomy"]) >= {"class", "VE_ms", "TE_ms", "MI_ms", "paper_class", "rule", "factor"}
    assert records[0]["taxonomy"]["paper_class"] == "d" and records[1]["taxonomy"]["paper_class"] == "b"
    assert "[1/2] measuring vilt-b32" in err
    # same --out: nothing is measured again; the table is built from the stored records
    code, out, err = run(capsys, "compare", "--arch", "vilt,clip", "--in-process", "--out", str(out_dir), *FAST)
    assert code == 0 and err.count("already measured") == 2
    for label in (
        "[VE] total ms",
        "[MI] total ms",
        "class measured",
        "class paper",
        "interaction.encoder ms",
        "unaccounted ms",
        "peak RSS MB",
    ):
        assert label in out
    vilt_median = records[0]["total"]["median_ms"]
    from vlpbench.report.table import sig

    assert sig(vilt_median) in out
    code, md, _ = run(
        capsys, "compare", "--arch", "vilt,clip", "--in-process", "--out", str(out_dir), "--format", "markdown", *FAST
    )
    assert md.startswith("|   | vilt-b32 | clip-vit-b32 |")
    code, csv_out, _ = run(
        capsys, "compare", "--arch", "vilt,clip", "--in-process", "--out", str(out_dir), "--format", "csv", *FAST
    )
    assert csv_out.splitlines()[0].startswith("arch,key,component,stage,group,leaf,n,median_ms,")
    assert {line.split(",")[0] for line in csv_out.splitlines()[1:]} == {"vilt-b32", "clip-vit-b32"}


def test_compare_ad_hoc_combination_isolated(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "compare",
        "--visual",
        "grid-r50",
        "--interaction",
        "co-attention",
        "--out",
        str(tmp_path / "r"),
        "--format",
        "json",
        *FAST,
    )
    assert code == 0, err
    (rec,) = json.loads(out)
    assert rec["arch"] == "grid-r50+bert-base-embed+co-attention"
    assert rec["memory"]["method"] == "ru_maxrss"
    assert any(s["name"] == "interaction.co_layers" and s["group"] == "MI" for s in rec["stages"])
