"""The table model and the machine-readable outputs: compare's tidy CSVs and the store's DataFrames.

Records come from real (toy-sized) measurements; every number in a CSV cell or frame column is checked
against the record it came from, and no cell carries a unit.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_many
from vlpbench.report import compare
from vlpbench.report.table import Column, Table, sig, text
from vlpbench.store import RunDir, load_frame, load_samples

FAST = Protocol(warmup=1, min_iters=4, min_time_s=0.0)
UNIT_IN_CELL = re.compile(r"\d\s*(ms|M|G|MB|%)\b|±|noisy|\(")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import toy

    toy.register_toys()
    run = RunDir.open(tmp_path_factory.mktemp("frame") / "run", create=True)
    specs = [
        RunSpec("test-toy-arch", protocol=FAST, threads=1),
        RunSpec("test-toy-arch", protocol=FAST, threads=1, batch_size=2, workload={"image_size": [16, 24]}),
    ]
    records = run_many(specs, run, isolated=False)
    return run, records


def _rows(text_: str):
    return list(csv.DictReader(io.StringIO(text_)))


def test_table_renders_one_model_four_ways():
    t = Table(
        [text("name"), Column("median_ms", "median ms"), Column("noisy", fmt=lambda v: "yes" if v else "no")],
        caption="c",
    )
    t.add("a|b", 1234.5678, True).add("c", None, False)
    assert t.to_csv().splitlines() == ["name,median_ms,noisy", "a|b,1234.5678,true", "c,,false"]
    md = t.to_markdown()
    assert "| name | median ms | noisy |" in md and "|---|---:|---|" in md and "| a\\|b | 1235 | yes |" in md
    assert "<td class=num>1235</td>" in t.to_html() and "<caption>c</caption>" in t.to_html()
    assert t.to_text().splitlines()[2].split() == ["a|b", "1235", "yes"]
    with pytest.raises(ValueError, match="row of 2 cells for 3 columns"):
        t.add("x", 1)
    with pytest.raises(ValueError, match="invalid column key"):
        Column("median ms")
    assert [sig(v) for v in (0.000012345, 0.5, 12.345, 98765.4)] == ["1.234e-05", "0.5000", "12.35", "98,765"]


def test_compare_csv_is_long_tidy_and_numeric(run):
    _, records = run
    rows = _rows(compare.format_comparison(records, "csv"))
    assert list(rows[0]) == [c.key for c in compare.STAGE_COLUMNS]
    assert all(k.endswith(("_ms", "_M", "MB")) or "ms" not in k for k in rows[0])  # units live in the header
    for rec in records:
        mine = {r["stage"]: r for r in rows if r["key"] == rec["key"]}
        # one row per stage of the record, plus unaccounted and total
        assert list(mine) == [s["name"] for s in rec["stages"]] + ["unaccounted", "total"]
        for s in rec["stages"]:
            row = mine[s["name"]]
            assert float(row["median_ms"]) == pytest.approx(s["median_ms"], rel=1e-11)
            assert float(row["p95_ms"]) == pytest.approx(s["p95_ms"], rel=1e-11)
            assert [float(row["ci95_low_ms"]), float(row["ci95_high_ms"])] == pytest.approx(s["ci95_ms"], rel=1e-11)
            assert row["noisy"] == str(s["noisy"]).lower() and int(row["n"]) == s["n"]
        assert float(mine["total"]["median_ms"]) == pytest.approx(rec["total"]["median_ms"], rel=1e-11)
        assert float(mine["unaccounted"]["median_ms"]) == pytest.approx(rec["unaccounted_ms"], rel=1e-11, abs=1e-12)
    for row in rows:
        for k, v in row.items():
            if k not in ("arch", "key", "component", "stage", "group"):
                assert v == "" or v in ("true", "false") or float(v) == float(v), (k, v)
                assert not UNIT_IN_CELL.search(v), (k, v)


def test_compare_summary_csv_one_row_per_configuration(run):
    _, records = run
    rows = _rows(compare.format_comparison(records, "csv-summary"))
    assert len(rows) == len(records)
    for row, rec in zip(rows, records):
        assert row["key"] == rec["key"]
        assert float(row["median_ms"]) == pytest.approx(rec["total"]["median_ms"], rel=1e-11)
        assert float(row["uninstrumented_median_ms"]) == pytest.approx(rec["uninstrumented"]["median_ms"], rel=1e-11)
        b = rec["workload"]["batch_size"]
        assert float(row["samples_per_s"]) == pytest.approx(b * 1e3 / rec["uninstrumented"]["median_ms"])
        assert float(row["params_M"]) == pytest.approx(rec["params"]["total"] / 1e6)
        assert float(row["gflops"]) == pytest.approx(rec["flops"]["total"] / 1e9)
        assert [int(row["image_height_px"]), int(row["image_width_px"])] == rec["workload"]["image_size"]
        assert float(row["MI_ms"]) == pytest.approx(rec["groups"]["MI"]["median_ms"], rel=1e-11)
        assert row["class_measured"] == rec["taxonomy"]["class"]
        assert float(row["peak_rss_MB"]) == rec["memory"]["rss_peak_mb"]
    # the side-by-side view for people keeps the groups and the class
    view = compare.format_comparison(records, "table")
    for label in ("[VE] total ms", "[MI] total ms", "class measured", "samples/s", "unaccounted ms"):
        assert label in view
    assert compare.format_comparison(records, "markdown").startswith("|   | test-toy-arch | test-toy-arch |")


def test_load_frame_columns_and_what_adds_up(run):
    rd, records = run
    df = load_frame(rd.path)
    for col in (
        "workload.image_height",
        "workload.image_width",
        "p95_ms",
        "ci95_low_ms",
        "ci95_high_ms",
        "noisy",
        "cv",
    ):
        assert col in df, col
    assert "samples_ms" not in df  # raw samples come from load_samples, not as a list column
    small = df[df["key"] == records[1]["key"]]
    assert set(small["workload.image_height"]) == {16} and set(small["workload.image_width"]) == {24}
    assert df["workload.image_height"].dtype.kind in "iu"
    leaf = small[small["stage"] == "interaction.mix"].iloc[0]
    st = next(s for s in records[1]["stages"] if s["name"] == "interaction.mix")
    assert leaf["p95_ms"] == st["p95_ms"] and [leaf["ci95_low_ms"], leaf["ci95_high_ms"]] == st["ci95_ms"]

    samples = load_samples(rd.path)
    assert list(samples.columns) == ["run", "key", "arch", "component", "stage", "group", "leaf", "iteration", "ms"]
    for rec in records:
        mine = samples[samples["key"] == rec["key"]]
        assert len(mine[mine["stage"] == "total"]) == rec["total"]["n"]
        assert len(mine[mine["stage"] == "uninstrumented"]) == rec["uninstrumented"]["n"]
        # the docstring's claim: per iteration, leaf stages + unaccounted == total (medians do not add)
        parts = mine[mine["leaf"]].groupby("iteration")["ms"].sum()
        total = mine[mine["stage"] == "total"].set_index("iteration")["ms"]
        assert parts.values == pytest.approx(total.loc[parts.index].values, rel=1e-9, abs=1e-9)


def test_compare_cli_writes_csvs_and_the_command_line(tmp_path, capsys):
    import toy
    from vlpbench import cli

    toy.register_toys()
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--arch",
        "test-toy-arch",
        "--in-process",
        "--out",
        str(out),
        "--iters",
        "2",
        "--min-time",
        "0",
        "--warmup",
        "1",
        "--no-flops",
        "--format",
        "csv-summary",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == ["vlpbench", *argv] and info["targets"] == ["test-toy-arch"]
    assert (out / "summary.csv").read_text() == printed
    assert _rows((out / "stages.csv").read_text())[-1]["stage"] == "total"
