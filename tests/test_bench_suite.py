"""`make bench` end to end at tiny size: pytest-benchmark JSON, records, Markdown/CSV tables and the figure."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_profile_writes_every_output(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "benchmarks" / "test_embedders.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--rootdir={ROOT}",
            "--vlpbench-profile=smoke",
            "--vlpbench-threads=1",
            f"--vlpbench-out={out}",
            f"--benchmark-json={out / 'pytest-benchmark.json'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("embedders.md", "embedders.csv", "embedders.png", "pytest-benchmark.json"):
        assert (out / name).stat().st_size > 0, name
    pb = json.loads((out / "pytest-benchmark.json").read_text())
    names = {b["name"] for b in pb["benchmarks"]}
    assert {"butd-r101-c4", "pixelbert-r50-grid", "vilt-b32-patch", "bert-base-embed"} <= names
    md = (out / "embedders.md").read_text()
    for stage in (
        "visual.rpn.nms",
        "visual.roi_align",
        "visual.roi_head",
        "visual.det.nms",
        "visual.backbone",
        "visual.patch_embed",
    ):
        assert f"| {stage} |" in md, stage
    # the x-patch column is computed in this run: the patch row is exactly 1; the CSV is tidy (numbers only)
    import csv

    with open(out / "embedders.csv", newline="") as f:
        rows = {r["embedder"]: r for r in csv.DictReader(f)}
    assert float(rows["vilt-b32-patch"]["x_patch"]) == 1.0
    assert rows["vilt-b32-patch"]["image_height_px"].isdigit()
    # both medians are labelled, in the Markdown and in pytest-benchmark's JSON, and they are the record's
    assert "median ms (stage markers)" in md and "median ms (no markers, = pytest-benchmark)" in md
    for b in pb["benchmarks"]:
        info = b["extra_info"]
        assert info["median_ms_stage_markers"] == pytest.approx(float(rows[b["name"]]["median_ms"]), rel=1e-11)
        assert info["median_ms_no_markers"] == pytest.approx(float(rows[b["name"]]["no_marker_median_ms"]), rel=1e-11)
    runs = list((tmp_path / "reports" / "runs").iterdir())
    assert len(runs) == 1 and len(list(runs[0].glob("*.json"))) == len(names) + 1  # records + run.json
    assert (out / "embedders-stages.csv").stat().st_size > 0
    assert "vlpbench embedder latency" in proc.stdout
    assert "[vlpbench] measuring visual embedder butd-r101-c4" in proc.stdout  # progress line
