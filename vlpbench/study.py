"""The accuracy study: detector stage, every small architecture x seeds under one budget, latency, tables.

``run_study(profile, out_dir)``:

1. trains the small Faster R-CNN on the generated boxes (``detector/``), measuring its val box recall;
2. for each architecture and seed trains (``runs/<arch>/seed<k>/``: checkpoint, log, summary; resumable)
   and evaluates on the test split (``metrics.json``);
3. writes one ``kind: "accuracy"`` record per architecture into the results store (``out_dir/records``),
   ``arch`` = the small preset, ``full_size`` = the full-size preset, metrics as mean / std / per-seed;
4. measures the latency of the same small models with the harness (``runner.run_many``, batch 1);
5. writes ``accuracy.md`` and ``accuracy.csv``: accuracy per class and task beside the measured latency
   of the small models and the paper time of the full-size preset (labelled paper).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.harness import env as envmod
from vlpbench.presets.small import REGION_ARCHS, SMALL_ARCHS
from vlpbench.registry import ARCH
from vlpbench.store import RunDir, SCHEMA, atomic_write_json, atomic_write_text, config_key

TABLE_METRICS = ("retrieval.tr_r1", "retrieval.ir_r1", "qa.non_relational", "qa.relational", "matching.random",
                 "matching.binding", "matching.relation")


@dataclass
class Profile:
    archs: Sequence[str] = SMALL_ARCHS
    seeds: Sequence[int] = (0, 1, 2)
    steps: int = 300
    batch_size: int = 32
    detector_steps: int = 150
    n_train: int = 2000
    n_val: int = 250
    n_test: int = 250
    gallery_images: int = 100
    captions: int = 2
    tiny: bool = False
    latency: bool = True
    latency_min_time_s: float = 1.0


PROFILES = {
    # about 50 min on 2 free cores: measured seconds per step (batch 32 x 3 tasks) vse .12, clip .13, vilbert .7,
    # uniter .10 (regions cached), pixelbert ~1.3, vilt .15 -> 300 steps x 3 seeds ~ 38 min + detector ~5 min
    "default": Profile(),
    # about 15 min of training on one core (1.8 s per step for the six models together): 3 seeds, half the
    # data, 150 steps (at 80 no model had left chance: image features start to matter after ~100 steps);
    # the detector stage (80 steps) comes on top unless out_dir/detector already holds it
    "quick": Profile(steps=150, detector_steps=80, n_train=1000, n_val=150, n_test=150),
    # the tests' pipeline check: tiny sizes, a few steps, not an accuracy measurement
    "smoke": Profile(archs=("clip-small", "vilt-small", "uniter-small"), seeds=(0, 1), steps=3, batch_size=8,
                     detector_steps=2, n_train=40, n_val=16, n_test=16, gallery_images=8, captions=1, tiny=True,
                     latency_min_time_s=0.0),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    if name not in PROFILES:
        raise bad_value("profile", name, PROFILES)
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


def summarize(values: List[float]) -> Dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": values}


def run_one(arch: str, seed: int, profile: Profile, data, out_dir: str, detector: Optional[Dict[str, Any]]):
    from vlpbench.evaluate import evaluate_all
    from vlpbench.training import DataSpec, TrainConfig, train

    run_dir = os.path.join(out_dir, "runs", arch, f"seed{seed}")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics_path):
        return json.load(open(metrics_path))
    cfg = TrainConfig(arch=arch, seed=seed, steps=profile.steps, batch_size=profile.batch_size, tiny=profile.tiny,
                      detector=detector["weights"] if (detector and arch in REGION_ARCHS) else None,
                      data=DataSpec(n_train=profile.n_train, n_val=profile.n_val, n_test=profile.n_test),
                      checkpoint_every=max(1, profile.steps // 4))
    task, summary = train(cfg, run_dir, data=data)
    metrics = evaluate_all(task, data, "test", profile.gallery_images, profile.captions)
    result = {"metrics": metrics, "train": summary, "config": cfg.to_dict()}
    atomic_write_json(metrics_path, result)
    return result


def accuracy_record(arch: str, results: List[Dict[str, Any]], profile: Profile, detector, data_desc) -> Dict[str, Any]:
    entry = ARCH.get(arch)
    names = [k for k in results[0]["metrics"] if not k.startswith("_")]
    config = {"arch": arch, "tiny": profile.tiny, "train": {k: v for k, v in results[0]["config"].items()
                                                            if k not in ("seed", "progress", "checkpoint_every")}}
    return {
        "schema": SCHEMA, "kind": "accuracy", "key": "accuracy-" + config_key(config), "arch": arch,
        "full_size": entry.paper.get("full_size"), "class": entry.paper.get("class"), "config": config,
        "workload": {"data": data_desc, "retrieval": results[0]["metrics"]["_notes"]["retrieval"],
                     "matching_rule": results[0]["metrics"]["_notes"]["matching"]["rule"]},
        "metrics": {k: summarize([r["metrics"][k] for r in results]) for k in names},
        "seeds": [r["config"]["seed"] for r in results],
        "train": {"steps": results[0]["train"]["steps"], "pairs_seen": results[0]["train"]["pairs_seen"],
                  "wall_s": [r["train"]["wall_s"] for r in results], "optimizer": "AdamW",
                  "schedule": results[0]["train"]["schedule"], "loss": results[0]["train"]["loss"]},
        "detector": ({"weights": detector["weights"], "recall": detector["recall"]}
                     if detector and arch in REGION_ARCHS else None),
        "env": envmod.capture("cpu", "float32", False), "status": "ok",
    }


def measure_latency(archs: Sequence[str], store: RunDir, profile: Profile) -> Dict[str, float]:
    """Median end-to-end ms (batch 1, 2 threads) of each small model, measured by the harness."""
    from vlpbench.harness.protocol import Protocol
    from vlpbench.harness.runner import RunSpec, run_many

    specs = [RunSpec(target=a, tiny=profile.tiny, batch_size=1, threads=2, count_flops=False,
                     protocol=Protocol(min_iters=3, min_time_s=profile.latency_min_time_s, max_iters=50))
             for a in archs]
    records = run_many(specs, store, isolated=True)
    return {r["arch"]: r.get("total", {}).get("median_ms") for r in records if r.get("status") == "ok"}


def write_tables(records: List[Dict[str, Any]], latency: Dict[str, float], out_dir: str) -> Dict[str, str]:
    header = ["arch", "class", "full_size", *TABLE_METRICS, "latency_ms (measured, small)", "time_ms (paper, full)"]
    rows = []
    for rec in sorted(records, key=lambda r: (r["class"], r["arch"])):
        m = rec["metrics"]
        paper = ARCH.get(rec["full_size"]).paper.get("time_ms") if rec.get("full_size") else None
        rows.append([rec["arch"], rec["class"], rec["full_size"],
                     *[f"{100 * m[k]['mean']:.1f} ± {100 * m[k]['std']:.1f}" if k in m else "" for k in TABLE_METRICS],
                     f"{latency[rec['arch']]:.2f}" if latency.get(rec["arch"]) is not None else "",
                     f"{paper} (paper)" if paper is not None else ""])
    csv_path, md_path = os.path.join(out_dir, "accuracy.csv"), os.path.join(out_dir, "accuracy.md")
    with open(csv_path + ".tmp", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    os.replace(csv_path + ".tmp", csv_path)
    seeds = records[0]["seeds"] if records else []
    lines = [f"# Accuracy per class and task (test split, % mean ± std over seeds {seeds})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if records:
        lines += ["", f"Budget: {records[0]['train']['steps']} steps, {records[0]['train']['pairs_seen']} image-text "
                      f"pairs per run, AdamW, {records[0]['train']['schedule']}.",
                  f"Retrieval over the same gallery for every model ({records[0]['workload']['retrieval'].split(',')[0]}): "
                  "dual encoders by cosine of pooled embeddings, fusion models by ITM over every pair.",
                  "Matching for dual encoders: cosine similarity above a threshold chosen on val."]
        det = next((r["detector"] for r in records if r.get("detector")), None)
        if det:
            lines.append(f"Regions from detector {det['weights']} (val box recall@0.5 of the K regions "
                         f"{det['recall']['regions_recall@0.5']:.3f}, of detections {det['recall']['detections_recall@0.5']:.3f}).")
        lines.append("Latency: small models measured here (batch 1, 2 threads); time_ms (paper) is the full-size "
                     "preset's figure from the ViLT paper, not measured.")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return {"csv": csv_path, "md": md_path}


def run_study(profile: Profile, out_dir: str, log=print) -> Dict[str, Any]:
    from vlpbench.data import SyntheticData
    from vlpbench.detector import DetectorConfig, train_detector
    from vlpbench.training import DataSpec

    unknown = [a for a in profile.archs if a not in SMALL_ARCHS]
    if unknown:
        raise bad_value("architecture(s)", unknown, SMALL_ARCHS)
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    spec = DataSpec(n_train=profile.n_train, n_val=profile.n_val, n_test=profile.n_test)
    data = SyntheticData(spec.dataset_config())
    log(data.describe())
    detector = None
    region = [a for a in profile.archs if a in REGION_ARCHS]
    if region:
        det_path = os.path.join(out_dir, "detector", "detector.json")
        if os.path.exists(det_path):
            detector = json.load(open(det_path))
        else:
            log(f"[study] training the detector ({profile.detector_steps} steps)")
            detector = train_detector(DetectorConfig(arch=region[0], steps=profile.detector_steps, tiny=profile.tiny),
                                      data, os.path.join(out_dir, "detector"))
        log(f"[study] detector recall {detector['recall']}")
    store = RunDir.open(os.path.join(out_dir, "records"), create=True, label="accuracy")
    records = []
    for arch in profile.archs:
        results = []
        for seed in profile.seeds:
            log(f"[study] {arch} seed {seed}")
            results.append(run_one(arch, seed, profile, data, out_dir, detector))
        rec = accuracy_record(arch, results, profile, detector, spec.__dict__)
        store.write(rec)
        records.append(rec)
    latency = measure_latency(profile.archs, store, profile) if profile.latency else {}
    paths = write_tables(records, latency, out_dir)
    log(open(paths["md"]).read())
    return {"records": records, "latency": latency, "tables": paths, "wall_s": time.perf_counter() - start}
