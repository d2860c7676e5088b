"""Trainer: exact resume, refused resumes, DDP on 2 CPU processes, CLI, real-dataset evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vlpbench.cli import main
from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.study.data import SyntheticData
from vlpbench.study.training import DataSpec, TrainConfig, load_checkpoint, train

load_all()

SPEC = DataSpec(n_train=24, n_val=8, n_test=8)


@pytest.fixture(scope="module")
def data():
    return SyntheticData(SPEC.dataset_config())


def cfg(**kw):
    base = dict(
        arch="vilt-small",
        tiny=True,
        steps=4,
        batch_size=4,
        data=SPEC,
        progress=False,
        checkpoint_every=2,
        align_frac=0.4,
    )
    return TrainConfig(**{**base, **kw})


def test_resume_equals_uninterrupted(tmp_path, data):
    full, _ = train(cfg(), str(tmp_path / "full"), data=data)
    part, s1 = train(cfg(), str(tmp_path / "cut"), data=data, stop_after=2)
    assert s1["steps"] == 2 and not s1["finished"]
    assert load_checkpoint(str(tmp_path / "cut" / "checkpoint.pt"))["step"] == 2
    resumed, s2 = train(cfg(), str(tmp_path / "cut"), data=data)
    # step 1 is the alignment phase (align_frac 0.4 of 4 steps: one batch), steps 2-4 joint (three batches)
    assert s2["steps"] == 4 and s2["finished"] and s2["pairs_seen"] == (1 + 3 * 3) * 4 and s2["align_steps"] == 1
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and training moved the weights away from a different seed's
    other, _ = train(cfg(seed=1, steps=1), str(tmp_path / "other"), data=data)
    qa_keys = [k for k in a if k.startswith("qa.")]
    assert qa_keys and not all(torch.equal(other.state_dict()[k], a[k]) for k in qa_keys)
    log = [json.loads(l) for l in open(tmp_path / "cut" / "train_log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)


def test_learning_rate_defaults_to_the_architectures(capsys):
    from vlpbench.presets.small import ARCH_LR, STUDY_LR, study_lr

    assert study_lr("vilt-small") == STUDY_LR == 1e-3 and study_lr("vilbert-small") == ARCH_LR["vilbert-small"]
    assert TrainConfig(arch="vilbert-small").lr == 2e-4 and TrainConfig(arch="uniter-small").lr == 1e-3
    assert TrainConfig(arch="vilbert-small", lr=1e-3).lr == 1e-3  # an explicit rate wins
    c = TrainConfig(arch="vilbert-small")
    assert TrainConfig.from_dict(c.to_dict()).lr == 2e-4
    with pytest.raises(VlpbenchError, match="invalid lr"):
        TrainConfig(arch="vilt-small", lr=0.0).validate()
    # `vlpbench train --help` names the rates the presets set
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{STUDY_LR:g}" in out and all(f"{lr:g} for {a}" in out for a, lr in ARCH_LR.items())


def test_resume_refuses_other_config_and_arch(tmp_path, data):
    train(cfg(steps=2), str(tmp_path / "r"), data=data, stop_after=1)
    with pytest.raises(VlpbenchError, match=r"configuration differs \(lr"):
        train(cfg(steps=2, lr=5e-4), str(tmp_path / "r"), data=data)
    with pytest.raises(VlpbenchError, match="is for architecture 'vilt-small', not 'clip-small'"):
        train(cfg(arch="clip-small", steps=2), str(tmp_path / "r"), data=data)


@pytest.mark.parametrize("arch", ["clip-small", "vse-small", "vilbert-small", "pixelbert-small"])
def test_every_family_trains_one_step(tmp_path, data, arch):
    task, summary = train(cfg(arch=arch, steps=1), str(tmp_path / arch), data=data)
    assert summary["family"] == ("dual" if arch in ("clip-small", "vse-small") else "fusion")
    assert summary["loss"] == {"clip-small": "infonce", "vse-small": "hinge"}.get(arch, "mlm+itm+match+qa")


def test_bad_config_is_a_clear_error():
    with pytest.raises(VlpbenchError, match="invalid steps 0"):
        cfg(steps=0).validate()
    with pytest.raises(VlpbenchError, match="unknown architecture 'nope'"):
        cfg(arch="nope").validate()


def test_cli_train_and_error(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--arch",
            "vilt-small",
            "--tiny",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--run-dir",
            str(tmp_path / "cli"),
            "--n-train",
            "24",
            "--n-val",
            "8",
            "--n-test",
            "8",
            "--no-progress",
        ]
    )
    summary, result = _documents(capsys.readouterr().out)
    assert rc == 0 and summary["steps"] == 2 and summary["finished"]
    # the finished model is scored on the generated test split, as the study scores its runs
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text()) == result
    assert result["split"] == "test" and 0 <= result["metrics"]["qa.non_relational"] <= 1
    assert {"retrieval.tr_r1", "matching.pairwise_binding"} <= set(result["metrics"])
    assert result["bar"]["passed"] == (result["metrics"]["qa.non_relational"] >= result["bar"]["qa.non_relational"])
    assert main(["train", "--arch", "nope", "--run-dir", str(tmp_path / "x")]) == 2
    assert "unknown architecture 'nope'" in capsys.readouterr().err


def test_cli_train_exposes_objectives_schedule_and_references(tmp_path, capsys):
    base = [
        "train",
        "--tiny",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--n-train",
        "24",
        "--n-val",
        "8",
        "--n-test",
        "8",
        "--no-progress",
    ]
    rc = main(
        base
        + [
            "--arch",
            "vilt-small",
            "--run-dir",
            str(tmp_path / "v"),
            "--objective",
            "wpa=0.1",
            "--objective",
            "itc=1",
            "--hard-negatives",
            "--masking",
            "bert",
            "--augment",
            "randaugment",
            "--warmup-frac",
            "0.5",
            "--weight-decay",
            "0.05",
        ]
    )
    summary = _documents(capsys.readouterr().out)[0]
    assert rc == 0 and summary["loss"] == "itc+mlm+itm+wpa(0.1)+bert-masking+hard-negatives+match+qa"
    assert summary["align_steps"] == 0 and summary["augment"] == "randaugment"  # --align-frac defaults to 0
    cfg = load_checkpoint(str(tmp_path / "v" / "checkpoint.pt"))["config"]
    assert cfg["weight_decay"] == 0.05 and cfg["warmup_frac"] == 0.5 and cfg["objectives"]["wpa"] == 0.1
    rc = main(base + ["--arch", "rn-small", "--run-dir", str(tmp_path / "rn"), "--align-frac", "0.5", "--no-eval"])
    (summary,) = _documents(capsys.readouterr().out)  # --no-eval: the summary only
    assert not (tmp_path / "rn" / "metrics.json").exists()
    assert rc == 0 and summary["family"] == "reference" and summary["qa_seen"] == 8
    assert summary["align_steps"] == 0 and summary["pairs_seen"] == 8  # QA at every step, nothing else read
    assert main(base + ["--arch", "vilt-small", "--run-dir", str(tmp_path / "x"), "--objective", "wpa"]) == 2
    assert "invalid --objective 'wpa'" in capsys.readouterr().err
    assert main(base + ["--arch", "vilt-small", "--run-dir", str(tmp_path / "x"), "--data", "huge"]) == 2
    assert "invalid --data 'huge'" in capsys.readouterr().err


def _documents(text: str) -> list:
    """The JSON documents printed one after another."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


def _karpathy(root, names):
    from PIL import Image

    os.makedirs(root / "val2014", exist_ok=True)
    images = []
    for i, name in enumerate(names):
        arr = np.zeros((40, 50, 3), np.uint8)
        arr[5:20, 5 + 10 * i : 20 + 10 * i] = (255, 0, 0)
        Image.fromarray(arr).save(root / "val2014" / name)
        images.append(
            {
                "filepath": "val2014",
                "filename": name,
                "split": "test",
                "cocoid": i,
                "sentences": [
                    {"raw": "a red square", "tokens": ["a", "red", "square"]},
                    {"raw": "a blue circle", "tokens": ["a", "blue", "circle"]},
                ],
            }
        )
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))


def test_eval_real_dataset_with_own_checkpoint(tmp_path, data, capsys):
    EVAL_OUT = ["--out", str(tmp_path / "eval-run"), "--no-progress"]
    train(cfg(steps=1), str(tmp_path / "ck"), data=data)
    root = tmp_path / "coco"
    _karpathy(root, ["a.png", "b.png"])
    rc = main(["eval", "--dataset", "coco", "--root", str(root), "--weights", str(tmp_path / "ck"), *EVAL_OUT])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["images"] == 2 and out["texts"] == 4 and 0 <= out["tr_r1"] <= 1
    os.remove(root / "val2014" / "b.png")
    EVAL_OUT[1] = str(tmp_path / "eval-run-2")  # the first run's record is complete: the same --out would skip it
    assert main(["eval", "--dataset", "coco", "--root", str(root), "--weights", str(tmp_path / "ck"), *EVAL_OUT]) == 2
    assert "'val2014/b.png'" in capsys.readouterr().err
    assert (
        main(["eval", "--dataset", "coco", "--root", str(tmp_path), "--weights", str(tmp_path / "ck"), *EVAL_OUT]) == 2
    )
    assert "lacks dataset_coco.json" in capsys.readouterr().err
    assert main(["eval", "--dataset", "coco", "--root", str(root), "--weights", str(tmp_path), *EVAL_OUT]) == 2
    assert "lacks checkpoint.pt" in capsys.readouterr().err


def test_eval_refuses_checkpoint_of_other_arch(tmp_path, data):
    from vlpbench.study.evaluate_real import load_own

    train(cfg(steps=1), str(tmp_path / "ck"), data=data)
    ck = load_checkpoint(str(tmp_path / "ck" / "checkpoint.pt"))
    ck["config"]["arch"] = ck["arch"] = "clip-small"
    torch.save(ck, tmp_path / "ck" / "checkpoint.pt")
    with pytest.raises(VlpbenchError, match="does not fit architecture 'clip-small'"):
        load_own(str(tmp_path / "ck"))


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from vlpbench.presets import load_all
    from vlpbench.study.training import DataSpec, TrainConfig, train
    load_all()
    out = sys.argv[1]
    cfg = TrainConfig(arch="vilt-small", tiny=True, steps=3, batch_size=4, progress=False,
                      data=DataSpec(n_train=24, n_val=8, n_test=8), align_frac=0.4)
    task, summary = train(cfg, os.path.join(out, "run"))
    torch.save(task.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_identical(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["pairs_seen"] == (1 + 2 * 3) * 4 * 2  # 1 alignment + 2 joint steps


# ---- the image path learns (regressions of a study where no model used the images) ---------------------
def _task(arch, data, tiny=True):
    from vlpbench.study.training import build_task_model

    return build_task_model(TrainConfig(arch=arch, tiny=tiny, data=SPEC), data)


def _batch(data, task_name="retrieval", n=8):
    from vlpbench.study.training import IndexedTask, Stream

    return Stream(IndexedTask(data, task_name, "train"), n, 0, 0, 1).next()


def test_patch_families_get_their_processors_normalisation(data):
    from vlpbench.embedders.patch import processor_normalise

    expected = {"clip-small": "clip", "vilt-small": "vilt", "pixelbert-small": None}
    b = _batch(data)
    for arch, proc in expected.items():
        task = _task(arch, data)
        assert task.pixel_processor == proc, arch
        if proc is None:
            continue
        pixels = b["pixel_values"]
        want = task.model.visual(pixel_values=processor_normalise(pixels, proc)).features
        assert torch.allclose(task.visual(b).features, want)
        assert not torch.allclose(task.model.visual(pixel_values=pixels).features, want)
    gray = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(processor_normalise(gray, "vilt"), torch.zeros(1, 3, 2, 2))
    with pytest.raises(VlpbenchError, match="image processor family"):
        processor_normalise(gray, "imagenet-ish")


def test_itm_negatives_are_masked_like_positives(data):
    """A positive is the MLM forward (masked text); an unmasked negative would be told apart by its
    missing [MASK] tokens alone, without looking at the image."""
    task = _task("vilt-small", data)
    seen = []
    interact = task.interact
    task.interact = lambda v, ids, mask: seen.append(ids) or interact(v, ids, mask)
    batches = {t: _batch(data, t) for t in ("retrieval", "qa", "matching")}
    task(batches["retrieval"], batches["qa"], batches["matching"], generator=torch.Generator().manual_seed(3))
    pos, neg = seen[0], seen[1]
    assert bool((pos == 3).any()), "the positives carry [MASK] tokens"
    assert torch.equal(neg, pos.roll(1, 0))


def test_dual_encoder_learns_from_images_on_one_batch(data):
    """CLIP-small, one fixed batch of 8 pairs (8 images), InfoNCE only: the image tower must separate the
    images.  Before the fixes the pooled image embeddings of different images were at cosine 1.000 and
    InfoNCE stayed at ln(8) = 2.08."""
    import math

    import torch.nn.functional as F

    torch.manual_seed(0)
    task = _task("clip-small", data, tiny=False)
    task.train()
    from vlpbench.study.data import collate
    from vlpbench.study.training import IndexedTask

    ds = IndexedTask(data, "retrieval", "train")
    first = {}
    for k, owner in enumerate(ds.owner):  # one caption of each of 8 different images
        first.setdefault(owner, k)
    b = collate([ds[k] for k in list(first.values())[:8]])
    assert len(set(b["image_index"].tolist())) == 8
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    target = torch.arange(8)
    losses = []
    for _ in range(60):
        out = task.interact(task.visual(b), b["input_ids"], b["attention_mask"])
        logits = out.logits_per_image
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    img = F.normalize(out.image_embeds.detach(), dim=-1)
    off = (img @ img.t())[~torch.eye(8, dtype=torch.bool)]
    assert losses[-1] < 0.5 * math.log(8), losses[::10]
    assert off.mean() < 0.9, off.mean()


def test_alignment_phase_trains_only_the_alignment_objective(tmp_path, data):
    import json

    for arch, align, joint in (
        ("vilt-small", {"itm"}, {"itm", "mlm", "match", "qa"}),
        ("clip-small", {"itc"}, {"itc", "match", "qa"}),
    ):
        train(cfg(arch=arch, align_frac=0.5), str(tmp_path / arch), data=data)
        log = [json.loads(line) for line in open(tmp_path / arch / "train_log.jsonl")]
        parts = [set(r) - {"step", "loss", "lr"} for r in log]
        assert parts == [align, align, joint, joint]
    with pytest.raises(VlpbenchError, match="align_frac"):
        cfg(align_frac=1.0).validate()


def test_oracle_regions_are_the_ground_truth_boxes(data):
    from vlpbench.study.training import cache_regions, oracle_regions

    task = _task("uniter-small", data)
    split = data.split("train")
    pixels = split.images[:2].float() / 255.0
    boxes = [torch.tensor([o.box for o in s.objects], dtype=torch.float32) for s in split.scenes[:2]]
    out = oracle_regions(task.model.visual.eval(), pixels, boxes)
    for i, b in enumerate(boxes):
        assert int(out.mask[i].sum()) == len(b)
        torch.testing.assert_close(out.boxes[i, : len(b)], b / 64)
        assert float(out.features[i, len(b) :].abs().sum()) == 0
    cache_regions(task, data, None, oracle=True)
    torch.testing.assert_close(task.visual_cache["train"]["boxes"][:2], out.boxes)
    with pytest.raises(VlpbenchError, match="invalid regions 'gt'"):
        cfg(regions="gt").validate()
