"""The study's smoke profile: detector stage, 3 classes x 2 seeds, latency by the harness, records, tables."""

from __future__ import annotations

import csv

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.registry import ARCH
from vlpbench.store import RunDir, validate_record
from vlpbench.study.runner import TABLE_METRICS, get_profile, run_study, summarize_seeds

load_all()


def test_small_presets_point_at_full_size_presets():
    from vlpbench.presets.small import SMALL_ARCHS

    classes = set()
    for name in SMALL_ARCHS:
        small, full = ARCH.get(name), ARCH.get(ARCH.get(name).paper["full_size"])
        assert small.paper["class"] == full.paper["class"]
        s, f = small.config, full.config
        assert (s.visual, s.text, s.interaction) == (f.visual, f.text, f.interaction)  # same stages, smaller
        classes.add(small.paper["class"])
    assert classes == {"a", "b", "c", "d"}


def test_summarize_and_profile_errors():
    assert summarize_seeds([0.5, 0.7]) == {
        "mean": pytest.approx(0.6),
        "std": pytest.approx(0.1414, abs=1e-4),
        "seeds": [0.5, 0.7],
    }
    with pytest.raises(VlpbenchError, match="invalid profile 'huge'"):
        get_profile("huge")
    with pytest.raises(VlpbenchError, match="invalid jobs"):
        run_study(get_profile("smoke"), "/nonexistent-never-created", jobs=0)
    with pytest.raises(VlpbenchError, match="invalid architecture"):
        run_study(get_profile("smoke", archs=("vilt-b32",)), "/nonexistent-never-created")


def test_smoke_study_writes_records_and_tables(tmp_path):
    profile = get_profile("smoke", detector_n_train=32, detector_threads=1)  # the detector's own data and threads
    lines = []
    out = run_study(profile, str(tmp_path), log=lines.append, jobs=2, threads=1)  # two worker processes
    assert any("on 2 worker processes x 1 thread(s)" in line for line in lines)
    assert any(f"training the detector ({profile.detector_steps} steps on 32 scenes, 1 thread(s))" in x for x in lines)
    recs = RunDir.open(tmp_path / "records").records()
    acc = [r for r in recs if r["kind"] == "accuracy"]
    lat = [r for r in recs if r["kind"] == "latency"]
    assert sorted(r["arch"] for r in acc) == sorted(profile.archs + profile.references)
    assert set(profile.archs) <= {r["arch"] for r in lat}  # joinable on arch
    for r in acc:
        validate_record(r)
        assert r["train"]["qa_seen"] == profile.steps * profile.batch_size  # QA from step 0 for every model
        if r["class"] == "ref":  # the calibration reference: a QA model
            assert r["full_size"] is None and {"qa.non_relational", "qa.relational"} <= set(r["metrics"])
            assert not any(k.startswith(("retrieval.", "matching.")) for k in r["metrics"])
            continue
        assert r["full_size"] == ARCH.get(r["arch"]).paper["full_size"]
        align = int(profile.align_frac * profile.steps)  # alignment-only steps see one batch, not three
        assert r["train"]["pairs_seen"] == (align + 3 * (profile.steps - align)) * profile.batch_size
        assert r["train"]["jobs"] == 2 and r["train"]["threads_per_job"] == 1
        for k in TABLE_METRICS:
            m = r["metrics"][k]
            assert len(m["seeds"]) == 2 and 0 <= m["mean"] <= 1 and m["std"] >= 0
        assert (r["detector"] is not None) == (r["arch"] == "uniter-small")
    det = next(r["detector"] for r in acc if r["detector"])
    assert det["weights"].endswith("detector.pt") and 0 <= det["recall"]["regions_recall@0.5"] <= 1
    rows = list(csv.reader(open(out["tables"]["csv"])))
    assert rows[0][0] == "arch" and len(rows) == 2 + len(profile.archs) + len(profile.references)  # + baseline
    assert rows[0][3 + len(TABLE_METRICS)].startswith("passed") and {r[3 + len(TABLE_METRICS)] for r in rows[1:-1]} <= {
        "yes",
        "no",
    }
    md = open(out["tables"]["md"]).read()
    assert "900 (paper)" in md and "uniter-small" in md
    assert "| baseline (no image) |" in md
    # a few steps pass no bar: nothing is compared, every VLP model is listed as not trained
    assert "## Shallow (a, b) against deep (c, d)" not in md
    assert all(f"{a} (not trained at this budget)" in md for a in profile.archs)
    assert rows[-1][0] == "baseline (no image)" and rows[-1][3] == f"{100 / profile.gallery_images:.1f}"
    assert all(out["latency"][a] > 0 for a in profile.archs)
    assert all(out["full_latency"][a] > 0 for a in profile.archs)  # tiny full-size presets in the smoke
    fulls = {ARCH.get(a).paper["full_size"] for a in profile.archs}
    assert fulls <= {r["arch"] for r in lat}
    assert rows[1][-2] and rows[1][-3]  # both measured latency columns
    # a second run (in this process) resumes from the per-seed metrics and is idempotent
    again = run_study(profile, str(tmp_path), log=lambda *a: None)
    assert again["records"][0]["metrics"] == out["records"][0]["metrics"]


def test_findings_compare_best_shallow_with_best_deep():
    from vlpbench.study.runner import findings

    def rec(arch, klass, values):
        return {"arch": arch, "class": klass, "metrics": {"qa.relational": summarize_seeds(values)}}

    recs = [
        rec("clip-small", "b", [0.40, 0.42, 0.41]),
        rec("vse-small", "a", [0.30, 0.31, 0.29]),
        rec("vilt-small", "d", [0.60, 0.62, 0.61]),
        rec("uniter-small", "c", [0.5, 0.2, 0.8]),
    ]
    lines = findings(recs, {"qa.relational": 0.35})
    row = next(line for line in lines if line.startswith("| qa.relational"))
    assert "clip-small 41.0" in row and "vilt-small 61.0" in row and "+20.0" in row and "deep ahead" in row
    assert row.endswith("| clip-small, vilt-small |")
    recs[2] = rec("vilt-small", "d", [0.2, 0.6, 0.55])  # noisy: the gap is within the spread
    lines = findings(recs, {"qa.relational": 0.35})
    row = next(line for line in lines if line.startswith("| qa.relational"))
    assert "no clear difference" in row
    assert findings([recs[0]], {}) == []  # one group only: nothing to compare
    single = [rec("clip-small", "b", [0.40]), rec("vilt-small", "d", [0.60])]
    row = findings(single, {"qa.relational": 0.35})[-1]
    assert "one seed: no spread, no verdict" in row and row.endswith("| neither |")


def test_comparison_only_among_models_that_passed_over_three_seeds():
    from vlpbench.study.runner import calibration, comparable

    def rec(arch, klass, nonrel, rel):
        return {
            "arch": arch,
            "class": klass,
            "metrics": {"qa.non_relational": summarize_seeds(nonrel), "qa.relational": summarize_seeds(rel)},
        }

    recs = [
        rec("clip-small", "b", [0.95, 0.94, 0.96], [0.5] * 3),
        rec("vilt-small", "d", [0.5, 0.6, 0.55], [0.4] * 3),
        rec("uniter-small", "c", [0.95, 0.97], [0.6, 0.6]),
        rec("rn-small", "ref", [0.95] * 3, [0.9] * 3),
        rec("cnn-mlp-small", "ref", [0.93] * 3, [0.7] * 3),
    ]
    keep, left = comparable(recs)
    assert [r["arch"] for r in keep] == ["clip-small"]
    assert left == [("vilt-small", "not trained at this budget"), ("uniter-small", "fewer than 3 seeds")]
    text = "\n".join(calibration(recs))
    assert "+20.0 points" in text and "**yes**" in text
    assert "| rn-small | 95.0 ± 0.0 | 90.0 ± 0.0 |" in text
    recs[3] = rec("rn-small", "ref", [0.95], [0.9])  # one seed: no spread to show
    assert "| rn-small | 95.0 (one seed) | 90.0 (one seed) |" in "\n".join(calibration(recs))
    recs[4] = rec("cnn-mlp-small", "ref", [0.85] * 3, [0.5] * 3)  # below the bar: not calibrated
    assert "**no**" in "\n".join(calibration(recs))


def test_parallel_jobs_report_the_first_failure_clearly(tmp_path):
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.runner import run_all

    profile = get_profile("smoke", batch_size=10_000)  # more pairs per batch than the split holds
    spec = profile.data_spec()
    data = SyntheticData(spec.dataset_config())
    with pytest.raises(VlpbenchError, match="invalid batch_size 10000"):
        run_all(
            [("clip-small", 0), ("vilt-small", 0)],
            profile,
            data,
            dict(spec.__dict__),
            str(tmp_path),
            None,
            jobs=2,
            threads=1,
            log=lambda *a: None,
        )
    assert not list(tmp_path.glob("runs/*/seed0/metrics.json"))


# ---- `vlpbench study-table`: the same tables from finished `vlpbench train` runs ------------------------
TRAIN = ["--tiny", "--batch-size", "4", "--n-train", "24", "--n-val", "8", "--n-test", "8", "--no-progress"]


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory):
    from vlpbench.cli import main

    root = tmp_path_factory.mktemp("train-runs")
    runs = {}
    for arch in ("clip-small", "vilt-small"):
        for seed in (0, 1, 2):
            run = root / f"{arch}-s{seed}"
            argv = ["train", "--arch", arch, "--seed", str(seed), "--steps", "2", "--run-dir", str(run), *TRAIN]
            assert main(argv) == 0
            runs[arch, seed] = run
    return root, runs


def _passing(src, dst):
    """A copy of a run whose metrics.json says it passed the bar (the table's comparison needs passed models)."""
    import json
    import shutil

    shutil.copytree(src, dst)
    m = json.loads((dst / "metrics.json").read_text())
    m["metrics"]["qa.non_relational"] = 0.95
    (dst / "metrics.json").write_text(json.dumps(m))
    return dst


def test_study_table_from_train_runs(train_runs, tmp_path, capsys):
    import json

    from vlpbench.cli import main

    _, runs = train_runs
    assert main(["study-table", *map(str, runs.values()), "--out", str(tmp_path / "t")]) == 0
    acc = {r["arch"]: r for r in RunDir.open(tmp_path / "t" / "records").records() if r["kind"] == "accuracy"}
    assert set(acc) == {"clip-small", "vilt-small"}
    for arch, rec in acc.items():
        validate_record(rec)
        assert rec["seeds"] == [0, 1, 2] and rec["train"]["steps"] == 2
        scored = [json.loads((runs[arch, s] / "metrics.json").read_text())["metrics"] for s in (0, 1, 2)]
        for k in TABLE_METRICS:
            assert rec["metrics"][k] == summarize_seeds([m[k] for m in scored])
    md = (tmp_path / "t" / "accuracy.md").read_text()
    assert "| baseline (no image) |" in md and "Latency: measured" not in md  # nothing was timed here
    assert "Not compared: " in md and "not trained at this budget" in md  # two steps pass nothing
    assert "Shallow (a, b) against deep (c, d)" not in md
    # rows over different seeds say so, and a single seed shows no spread
    one = [str(runs["clip-small", 0]), *(str(runs["vilt-small", s]) for s in (0, 1, 2))]
    assert main(["study-table", *one, "--out", str(tmp_path / "one")]) == 0
    md = (tmp_path / "one" / "accuracy.md").read_text()
    assert "over each row's seeds" in md and "Seeds: clip-small 0; vilt-small 0, 1, 2" in md
    clip_row = next(line for line in md.splitlines() if line.startswith("| clip-small"))
    assert "(one seed)" in clip_row and "±" not in clip_row
    assert "clip-small (fewer than 3 seeds)" in md or "clip-small (not trained at this budget)" in md
    # runs that passed the bar over three seeds are compared: best shallow (clip) against best deep (vilt)
    passing = [str(_passing(runs[k], tmp_path / f"{k[0]}-{k[1]}")) for k in runs]
    assert main(["study-table", *passing, "--out", str(tmp_path / "p")]) == 0
    md = (tmp_path / "p" / "accuracy.md").read_text()
    assert "Shallow (a, b) against deep (c, d)" in md and "| qa.relational |" in md
    assert "clip-small" in md.split("Shallow")[1] and "vilt-small" in md.split("Shallow")[1]


def test_study_table_bad_runs(train_runs, tmp_path, capsys):
    import shutil

    from vlpbench.cli import main

    root, runs = train_runs
    clip0, clip1 = str(runs["clip-small", 0]), str(runs["clip-small", 1])
    other = tmp_path / "steps3"
    assert main(["train", "--arch", "clip-small", "--steps", "3", "--run-dir", str(other), *TRAIN]) == 0
    twin = tmp_path / "twin"
    shutil.copytree(runs["clip-small", 0], twin)
    unscored = tmp_path / "unscored"
    assert main(["train", "--arch", "clip-small", "--steps", "2", "--run-dir", str(unscored), "--no-eval", *TRAIN]) == 0
    partial = tmp_path / "partial"
    argv = ["train", "--arch", "clip-small", "--steps", "3", "--stop-after", "1", "--run-dir", str(partial), *TRAIN]
    assert main(argv) == 0
    # the learning rate is the architecture's, so seeds of one architecture must share it
    lr_run = tmp_path / "lr"
    argv = ["train", "--arch", "clip-small", "--steps", "2", "--seed", "1", "--lr", "5e-4", "--run-dir", str(lr_run)]
    assert main([*argv, *TRAIN]) == 0
    capsys.readouterr()
    for dirs, expected in [
        ([clip0, str(other)], "differ in steps"),
        ([clip0, str(lr_run)], "differ in lr"),
        ([clip0, clip1, str(twin)], "seed given twice"),
        ([clip0, str(unscored)], "has not been scored"),
        ([clip0, str(partial)], "has not finished"),
        ([clip0, str(root)], "a `vlpbench train` run directory"),
    ]:
        assert main(["study-table", *dirs, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    assert not (tmp_path / "out" / "accuracy.md").exists()


def test_profile_objective_weights_reach_the_run_and_the_table(tmp_path):
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.runner import objective_departures, run_one

    assert get_profile("full").objectives == {"clip-small": {"align": 0.1, "match": 0.1}}
    assert get_profile("default").objectives == {}
    profile = get_profile("smoke", objectives={"clip-small": {"align": 0.1, "match": 0.1}})
    data = SyntheticData(profile.data_spec().dataset_config())
    clip = run_one("clip-small", 0, profile, data, str(tmp_path / "clip"), None, progress=False)
    vilt = run_one("vilt-small", 0, profile, data, str(tmp_path / "vilt"), None, progress=False)
    assert clip["config"]["objectives"]["align"] == 0.1 and clip["config"]["objectives"]["match"] == 0.1
    assert vilt["config"]["objectives"]["itm"] == 1.0  # other architectures keep the defaults
    assert profile.lr is None and vilt["config"]["lr"] == 1e-3  # each architecture's own learning rate
    records = [
        {"arch": "clip-small", "config": {"train": clip["config"]}},
        {"arch": "vilt-small", "config": {"train": vilt["config"]}},
        {"arch": "vilbert-small", "config": {"train": {"objectives": {}, "lr": 2e-4}}},
        {"arch": "rn-small", "config": {"train": {"objectives": {"align": 0.0}}}},
    ]
    assert objective_departures(records) == ["clip-small: align 0.1, match 0.1", "vilbert-small: lr 0.0002"]


def test_full_profile_gives_each_model_the_budget_it_was_measured_to_pass_at():
    full = get_profile("full")
    steps = {a: full.for_arch(a).steps for a in (*full.archs, *full.references)}
    assert steps == {
        "vse-small": 12000,
        "clip-small": 24000,
        "vilbert-small": 12000,
        "uniter-small": 36000,
        "pixelbert-small": 12000,
        "vilt-small": 12000,
        "rn-small": 64000,
        "cnn-mlp-small": 64000,
    }
    assert full.regions == "oracle" and full.for_arch("rn-small").data_spec().n_train == 40000
    assert (full.detector_steps, full.detector_n_train, full.detector_threads) == (200, 2000, 1)
    assert full.for_arch("vilt-small") is full and full.data_spec().n_train == 10000
    assert full.for_arch("rn-small").budgets == {}  # applied, not carried into the run's profile
    # a command-line override of a budget field holds for every architecture; other budget fields stay
    five = get_profile("full", steps=5)
    assert {five.for_arch(a).steps for a in (*five.archs, *five.references)} == {5}
    assert five.for_arch("cnn-mlp-small").batch_size == 64 and five.for_arch("clip-small").batch_size == 32
    assert get_profile("default").budgets == {}
    for budgets, expected in [
        ({"vilt-big": {"steps": 3}}, "invalid architecture of a budget 'vilt-big'"),
        ({"vilt-small": {"stpes": 3}}, r"invalid budget field\(s\) of vilt-small \['stpes'\]"),
        ({"uniter-small": {"regions": "gt"}}, "invalid regions of uniter-small 'gt'"),
    ]:
        with pytest.raises(VlpbenchError, match=expected):
            get_profile("smoke", budgets=budgets)
    with pytest.raises(VlpbenchError, match="invalid regions 'orcale'.*accepted"):
        get_profile("smoke", regions="orcale")


def test_a_budget_reaches_its_run_and_a_finished_run_of_other_settings_is_refused(tmp_path):
    from vlpbench.study.data import SyntheticData
    from vlpbench.study.runner import DataCache, budget_lines, run_one

    profile = get_profile("smoke", budgets={"vilt-small": {"steps": 2, "n_train": 48}})
    cache = DataCache(SyntheticData(profile.data_spec().dataset_config()))
    vilt = run_one("vilt-small", 0, profile, cache, str(tmp_path), None, progress=False)
    clip = run_one("clip-small", 0, profile, cache, str(tmp_path), None, progress=False)
    assert vilt["train"]["steps"] == 2 and vilt["config"]["data"]["n_train"] == 48
    assert clip["train"]["steps"] == profile.steps and clip["config"]["data"]["n_train"] == profile.n_train
    # the same profile over the same folder resumes; another budget over it is an error that names the change
    assert run_one("vilt-small", 0, profile, cache, str(tmp_path), None, progress=False) == vilt
    changed = r"other settings \(data.n_train 48 there, 40 now; steps 2 there, 4 now\).*another --out"
    with pytest.raises(VlpbenchError, match=changed):
        run_one("vilt-small", 0, get_profile("smoke", steps=4), cache, str(tmp_path), None, progress=False)
    records = [
        {"arch": a, "train": r["train"], "config": {"train": r["config"]}} for a, r in (("clip", clip), ("vilt", vilt))
    ]
    lines = budget_lines(records)
    assert f"clip {profile.steps:,} steps at batch 8 on 40 training scenes" in lines[0]
    assert "vilt 2 steps at batch 8 on 48 training scenes" in lines[0] and "own budget" in lines[1]
    assert budget_lines(records[:1])[0].startswith(f"Budget: {profile.steps} steps")


def test_study_table_with_per_architecture_budgets(train_runs, tmp_path, capsys):
    from vlpbench.cli import main

    _, runs = train_runs
    vilt3 = tmp_path / "vilt3"
    assert main(["train", "--arch", "vilt-small", "--steps", "3", "--run-dir", str(vilt3), *TRAIN]) == 0
    clips = [str(runs["clip-small", s]) for s in (0, 1, 2)]
    capsys.readouterr()
    assert main(["study-table", *clips, str(vilt3), "--out", str(tmp_path / "same")]) == 2
    assert "differ in steps" in capsys.readouterr().err
    assert main(["study-table", *clips, str(vilt3), "--out", str(tmp_path / "t"), "--per-arch-budgets"]) == 0
    md = (tmp_path / "t" / "accuracy.md").read_text()
    assert "clip-small 2 steps at batch 4 on 24 training scenes" in md and "vilt-small 3 steps" in md
    # seeds of one architecture still share their budget
    capsys.readouterr()
    argv = ["study-table", clips[1], str(vilt3), str(runs["vilt-small", 1]), "--out", str(tmp_path / "x")]
    assert main([*argv, "--per-arch-budgets"]) == 2
    err = capsys.readouterr().err
    assert "vilt-small: runs" in err and "differ in steps" in err and "Traceback" not in err
