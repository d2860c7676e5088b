"""`vlpbench report` built from small real runs: every figure and table the report names exists and
holds the measured numbers.

Tiny presets are measured for real, in process.  Real architecture presets are used when they are
registered; otherwise a test-only architecture composed of the committed tiny embedders and the
single-stream interaction stands in.  The one accuracy record is test input written here (the
trainer writes real ones): the report must plot and tabulate exactly what it says.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from vlpbench import cli
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_many
from vlpbench.report import tables
from vlpbench.report.build import build_report
from vlpbench.store import SCHEMA, RunDir

FAST = Protocol(min_iters=3, min_time_s=0, warmup=1)
STANDIN = "test-report-vilt"
ACC_METRIC = "test.caption_match_acc"


def _arch_names():
    from vlpbench.architectures.compose import ArchConfig, VLPModel
    from vlpbench.presets import load_all
    from vlpbench.registry import ARCH

    load_all()
    names = [n for n in ("vilt-b32", "clip-vit-b32") if n in ARCH]
    if not names:
        if STANDIN not in ARCH:
            ARCH.register(
                STANDIN,
                VLPModel.from_config,
                ArchConfig(visual="vilt-b32-patch", text="bert-base-embed", interaction="single-stream"),
                tiny={"tiny": True},
                paper={"class": "d"},
                description="test stand-in for vilt-b32",
            )
        names = [STANDIN]
    return names


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from vlpbench.registry import VISUAL

    root = tmp_path_factory.mktemp("report")
    archs = _arch_names()
    main = RunDir.open(root / "main", create=True)
    specs = [RunSpec(a, tiny=True, protocol=FAST) for a in archs]
    specs += [
        RunSpec(v, component="visual", tiny=True, protocol=FAST)
        for v in ("vilt-b32-patch", "pixelbert-r50-grid")
        if v in VISUAL
    ]
    run_many(specs, main, isolated=False)

    sweep = RunDir.open(root / "sweep", create=True)
    run_many(
        [RunSpec(archs[0], tiny=True, protocol=FAST, workload={"image_size": hw}) for hw in ([32, 32], [64, 96])],
        sweep,
        isolated=False,
    )

    acc = RunDir.open(root / "acc", create=True)
    acc.write(
        {
            "schema": SCHEMA,
            "kind": "accuracy",
            "key": "acc-test",
            "arch": archs[0],
            "config": {"tiny": True},
            "workload": {},
            "env": {"device": "cpu"},
            "metrics": {ACC_METRIC: {"mean": 0.625, "std": 0.025, "seeds": [0.6, 0.625, 0.65]}},
        }
    )
    return {"main": main.path, "sweep": sweep.path, "acc": acc.path, "archs": archs}


def _md_links(md: str):
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    csvs = re.findall(r"\(as CSV: \[[^\]]+\]\(([^)]+)\)\)", md)
    return images, csvs


def _csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_names_only_what_exists_and_holds_measured_numbers(runs, tmp_path):
    from PIL import Image

    out = tmp_path / "rep"
    md_path = build_report([runs["main"], runs["sweep"], runs["acc"]], out)
    md = md_path.read_text()
    html = (out / "report.html").read_text()
    images, csvs = _md_links(md)

    assert {
        "figures/figure1.png",
        "figures/taxonomy.png",
        "figures/latency_accuracy.png",
        "figures/scaling_image_size.png",
    } <= set(images)
    for rel in images:
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
        assert f'src="{rel}"' in html
    assert html.count("<table>") == md.count("(as CSV: [") == len(csvs)
    for rel in csvs:
        assert (out / rel).is_file()

    recs = {r["key"]: r for d in (runs["main"], runs["sweep"]) for r in RunDir(d).records()}
    # summary: one row per latency record, medians as recorded (CSV at full precision, Markdown at 4 digits)
    summary = {row["key"]: row for row in _csv(out / "tables/summary.csv")}
    assert len(summary) == len(recs)
    for r in recs.values():
        row = summary[r["key"]]
        assert row["configuration"] == tables.label(r)
        assert float(row["total_median_ms"]) == pytest.approx(r["total"]["median_ms"], rel=1e-11)
        assert float(row["total_iqr_ms"]) == pytest.approx(r["total"]["iqr_ms"], rel=1e-11)
        assert int(row["n"]) == r["total"]["n"]
        if r.get("flops"):
            assert float(row["gflops"]) == pytest.approx(r["flops"]["total"] / 1e9)
        assert f"| {tables.fmt(r['total']['median_ms'])} |" in md

    # per-stage tables for the non-sweep records: every leaf stage median, unaccounted and total
    for r in RunDir(runs["main"]).records():
        assert f"### {tables.label(r)}" in md
        rel = next(c for c in csvs if r["key"] in c)
        rows = {row["stage"]: row for row in _csv(out / rel)}
        for s in r["stages"]:
            if s["leaf"]:
                assert float(rows[s["name"]]["median_ms"]) == pytest.approx(s["median_ms"], rel=1e-11)
                assert f"| {s['name']} | {s['group']} | {tables.fmt(s['median_ms'])} |" in md
        assert float(rows["total"]["median_ms"]) == pytest.approx(r["total"]["median_ms"], rel=1e-11)
        assert float(rows["unaccounted"]["median_ms"]) == pytest.approx(r["unaccounted_ms"], rel=1e-11, abs=1e-9)

    # taxonomy: measured class and shares from the records, paper class from the registry facts
    tax = {row["configuration"]: row for row in _csv(out / "tables/taxonomy.csv")}
    for r in RunDir(runs["main"]).records():
        if r.get("taxonomy"):
            row = tax[tables.label(r)]
            assert row["class_measured"] == r["taxonomy"]["class"]
            assert float(row["MI_share"]) == pytest.approx(r["taxonomy"]["MI_share"], rel=1e-11)
            assert row["class_paper"] == (r["taxonomy"]["paper_class"] or "")

    # scaling: the two sweep points, in order of image area, with their medians
    points = _csv(out / "tables/scaling-image-size-points.csv")
    sweep = sorted(RunDir(runs["sweep"]).records(), key=lambda r: r["spec"]["workload"]["image_size"][0])
    assert [p["image_size"] for p in points] == ["32x32", "64x96"]
    assert [float(p["total_median_ms"]) for p in points] == pytest.approx(
        [r["total"]["median_ms"] for r in sweep], rel=1e-11
    )
    slopes = _csv(out / "tables/scaling-image-size-slopes.csv")
    assert slopes[0]["fastest_stage"] in {s["name"] for s in sweep[0]["stages"]}

    # accuracy joined on arch with the latency record of the same architecture
    (acc,) = _csv(out / "tables/accuracy.csv")
    assert acc["metric"] == ACC_METRIC and float(acc["mean"]) == 0.625 and acc["seeds"] == "3"
    assert acc["architecture"] == runs["archs"][0]

    # environment and labelling
    env = _csv(out / "tables/environment.csv")
    import torch

    lat_env = [e for e in env if e["record_kind"] == "latency"]
    assert lat_env and all(e["torch"] == torch.__version__ and e["device"] == "cpu" for e in lat_env)
    assert sum(int(e["records"]) for e in lat_env) == len(recs)
    assert "measured here" in md and "quoted from paper" in md and "P40 GPU" in md


def test_report_without_accuracy_says_so_and_cli_writes_html(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("reporting",))
    out = tmp_path / "cli-rep"
    assert cli.main(["report", str(runs["main"]), "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "No accuracy records in these runs" in md and "latency_accuracy.png" not in md
    assert "No sweep in these runs" in md
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "No accuracy records in these runs" in html


@pytest.mark.slow
def test_region_embedder_lands_in_the_region_schema(tmp_path):
    from vlpbench.registry import VISUAL

    _arch_names()
    if "frcnn-r50-fpn" not in VISUAL:
        pytest.skip("frcnn-r50-fpn is not registered")
    run = RunDir.open(tmp_path / "region", create=True)
    (rec,) = run_many([RunSpec("frcnn-r50-fpn", component="visual", tiny=True, protocol=FAST)], run, isolated=False)
    assert tables.schema_of(rec) == "region"
    md = build_report([run.path], tmp_path / "rep").read_text()
    assert "region: frcnn-r50-fpn (tiny)" not in md  # figure labels live in the PNG, the table names the schema
    row = next(r for r in _csv(tmp_path / "rep/tables/summary.csv"))
    assert row["schema"] == "region" and float(row["total_median_ms"]) == pytest.approx(
        rec["total"]["median_ms"], rel=1e-11
    )


def test_metric_values_reads_seed_blocks_and_skips_counts():
    rec = {
        "metrics": {
            "a": {"mean": 0.5, "std": 0.1, "seeds": [0.4, 0.5, 0.6]},
            "b": {"mean": 0.7, "seeds": [0.6, 0.8]},
            "n": 3000,
            "relational": 0.61,
            "empty": float("nan"),
        }
    }
    vals = tables.metric_values(rec)
    assert set(vals) == {"a", "b", "relational"}
    assert vals["a"] == {"mean": 0.5, "std": 0.1, "n": 3}
    assert vals["b"]["std"] == pytest.approx(0.1414, abs=1e-4)  # from the seeds when std is not given


def test_schema_is_what_the_embedder_declares_not_its_stage_names(tmp_path):
    import toy

    toy.register_toys()
    run = RunDir.open(tmp_path / "toy", create=True)
    (rec,) = run_many([RunSpec("test-toy-visual", component="visual", protocol=FAST)], run, isolated=False)
    assert rec["visual_schema"] == "patch" and tables.schema_of(rec) == "patch"  # ToyVisual's TokenSpec.schema
    renamed = [{**s, "name": "visual.rpn.nms"} for s in rec["stages"]]  # a detector-like stage name decides nothing
    assert tables.schema_of({**rec, "stages": renamed, "visual_schema": "grid"}) == "grid"
    assert tables.schema_of({**rec, "visual_schema": None}) is None


def test_figures_draw_the_records_numbers(runs, tmp_path):
    import json

    from PIL import Image

    from vlpbench.report import figures

    recs = [r for r in RunDir(runs["main"]).records()]
    p = figures.figure1(recs, tmp_path / "f1.png")
    data = json.loads((tmp_path / "f1.json").read_text())
    with Image.open(p) as im:
        assert im.size[0] > 800
    by_key = {r["key"]: r for r in recs}
    assert data["measured"] and len(data["paper"]) == 3  # the paper's bars are their own panel's, never mixed
    for bar in data["measured"]:
        r = by_key[bar["key"]]
        assert bar["total_median_ms"] == r["total"]["median_ms"]  # the total bar is the table's total
        assert bar["total_iqr_ms"] == r["total"]["iqr_ms"]
        assert bool(bar["flags"]) == bool(r["total"].get("noisy") or r["env"].get("busy"))
        ve = {s["name"].split(".", 1)[1]: s for s in r["stages"] if s["leaf"] and s["group"] == "VE"}
        for seg in bar["segments"]:
            if seg["stage"] in ve:
                assert seg["median_ms"] == ve[seg["stage"]]["median_ms"] and seg["iqr_ms"] == ve[seg["stage"]]["iqr_ms"]
    assert len(data["colours"]) < 10
    assert all("key" not in b for b in data["paper"]) and "Figure 1" in data["source_of_paper_bars"]

    arch = [r for r in recs if r.get("taxonomy")]
    figures.taxonomy(arch, tmp_path / "tax.png")
    tax = json.loads((tmp_path / "tax.json").read_text())["architectures"]
    for row, r in zip(tax, arch):
        assert row["class"] == r["taxonomy"]["class"] and row["MI_ms"] == r["taxonomy"]["MI_ms"]
        assert row["margin_ratio"] is None or row["margin_ratio"] > 1


@pytest.mark.parametrize(
    "ve,te,mi,cls,by",
    [
        (100, 0.3, 99, "c", "VE / MI"),  # VE 100 / MI 99: (c), by 1%: a close call
        (99, 0.3, 100, "d", "MI / max(VE, TE)"),  # VE 99 / MI 100: (d), by 1%: a close call
        (800, 0.3, 10, "c", "MI / TE"),
    ],
)
def test_class_margin_names_the_deciding_comparison(ve, te, mi, cls, by):
    from vlpbench.harness.taxonomy import classify

    t = classify(ve, te, mi)
    assert t["class"] == cls
    got_by, ratio = tables.class_margin(t)
    assert got_by == by and ratio > 1
    assert tables.is_close_call(t) == (ratio < 1.1)
    assert tables.is_close_call(t) == (abs(ve - mi) / min(ve, mi) < 0.1)


def test_label_tells_settings_apart():
    """Rows of one model measured under two settings (a GPU run's fp32, bf16 autocast, cuda-graphs) must
    not share a configuration name."""
    base = {"arch": "vilt-b32", "workload": {"image_size": [384, 640], "text_len": 40, "batch_size": 1}}
    fp32 = dict(base, spec={"dtype": "float32", "amp": False, "variant": "eager", "tf32": False})
    amp = dict(base, spec={"dtype": "bfloat16", "amp": True, "variant": "eager", "tf32": False})
    cast = dict(base, spec={"dtype": "float16", "amp": False, "variant": "eager", "tf32": True})
    graphs = dict(base, spec={"dtype": "float32", "amp": False, "variant": "cuda-graphs", "tf32": False})
    assert tables.label(fp32) == "vilt-b32 [384x640, L=40, B=1]"
    assert tables.label(amp) == "vilt-b32 [384x640, L=40, B=1] bfloat16 autocast"
    assert tables.label(cast) == "vilt-b32 [384x640, L=40, B=1] float16, tf32"
    assert tables.label(graphs) == "vilt-b32 [384x640, L=40, B=1] cuda-graphs"
    assert len({tables.label(r) for r in (fp32, amp, cast, graphs)}) == 4
