"""``vlpbench eval`` end to end on tiny files in each official format, with tiny checkpoints made here; every metric
is checked against a value the test computes itself from transformers' reference model and processor."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from vlpbench.cli import main
from vlpbench.study.vqa_metric import normalize_answer, vqa_accuracy

VILT_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=64,
    patch_size=32,
    vocab_size=120,
    max_position_embeddings=16,
)
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "cat",
    "dog",
    "on",
    "mat",
    "red",
    "car",
    "what",
    "color",
    "is",
    "the",
    "how",
    "many",
    "there",
    "photo",
    "of",
    ".",
    "?",
    "two",
    "left",
    "image",
    "has",
]
ANSWERS = ["yes", "no", "2", "red", "cat"]
SIZES = [(48, 80), (80, 48), (64, 64), (40, 100)]


def _save_tokenizer(d) -> None:
    from transformers import BertTokenizerFast

    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)


def _perturb(model) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _vilt(path, cls_name, **extra):
    import transformers

    torch.manual_seed(0)
    model = (
        getattr(transformers, cls_name)
        ._from_config(transformers.ViltConfig(**VILT_TINY, **extra), attn_implementation="eager")
        .eval()
    )
    _perturb(model)
    model.save_pretrained(path)
    _save_tokenizer(path)
    return path, model


def _clip(path):
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        eos_token_id=3,
        bos_token_id=2,
        pad_token_id=0,
    )  # BERT's [SEP] ends a text
    vision = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=16
    )
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    _perturb(model)
    model.save_pretrained(path)
    _save_tokenizer(path)
    return path, model


def _image(path, size, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _run(args, capsys):
    capsys.readouterr()  # drop what the test itself printed (save_pretrained's bars)
    code = main(["eval", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def _vilt_inputs(paths, texts, tok):
    """transformers' own preprocessing: ViltImageProcessor + the folder's tokenizer."""
    from PIL import Image
    from transformers import ViltImageProcessor

    imgs = [Image.open(p).convert("RGB") for p in paths]
    px = ViltImageProcessor()(images=imgs, return_tensors="pt")
    enc = tok(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    return dict(
        pixel_values=px["pixel_values"],
        pixel_mask=px["pixel_mask"],
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
    )


# ---- VQAv2 -----------------------------------------------------------------------------------------------------
QUESTIONS = ["what color is the car ?", "how many cat ?", "is there a dog ?", "what is on the mat ?"]


def _vqa_root(root, answers_per_question, types):
    root.mkdir(parents=True, exist_ok=True)
    qs, anns = [], []
    for i, (q, answers, t) in enumerate(zip(QUESTIONS, answers_per_question, types)):
        _image(root / "val2014" / f"COCO_val2014_{100 + i:012d}.jpg", SIZES[i], i)
        qs.append({"image_id": 100 + i, "question": q, "question_id": 1000 + i})
        anns.append(
            {
                "question_id": 1000 + i,
                "image_id": 100 + i,
                "answer_type": t,
                "multiple_choice_answer": max(set(answers), key=answers.count),
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)
                ],
            }
        )
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": qs}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": anns}))


def test_vqa_accuracy_by_hand():
    assert vqa_accuracy("2", ["2"] * 10) == 1.0
    # 2 of 10 agree: leaving out one of them leaves 1 match (1/3), leaving out another leaves 2 (2/3)
    assert vqa_accuracy("2", ["2", "2"] + ["3"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("two", ["2"] * 4 + ["3"] * 6) == 1.0  # normalised: number words -> digits
    assert normalize_answer("A Dog!") == "dog" and normalize_answer("dont") == "don't"


def test_eval_vqa_end_to_end(tmp_path, capsys):
    d, ref = _vilt(
        tmp_path / "vqa-ckpt",
        "ViltForQuestionAnswering",
        num_labels=5,
        id2label=dict(enumerate(ANSWERS)),
        label2id={a: i for i, a in enumerate(ANSWERS)},
    )
    from transformers import AutoTokenizer

    paths = [tmp_path / "vqa" / "val2014" / f"COCO_val2014_{100 + i:012d}.jpg" for i in range(4)]
    for i, p in enumerate(paths):
        _image(p, SIZES[i], i)
    with torch.no_grad():
        logits = ref(**_vilt_inputs(paths, QUESTIONS, AutoTokenizer.from_pretrained(d))).logits
    preds = [ANSWERS[i] for i in logits.argmax(-1).tolist()]
    other = {p: next(a for a in ANSWERS if a != p) for p in ANSWERS}
    answers = [
        [preds[0]] * 10,
        [preds[1]] * 2 + [other[preds[1]]] * 8,
        [other[preds[2]]] * 10,
        [preds[3]] * 3 + [other[preds[3]]] * 7,
    ]
    types = ["other", "number", "yes/no", "other"]
    _vqa_root(tmp_path / "vqa", answers, types)
    per_q = [1.0, (2 / 3 + 16 / 3) / 10, 0.0, (3 * (2 / 3) + 7 * 1.0) / 10]  # by hand, leave-one-out
    out = tmp_path / "run"
    args = [
        "--task",
        "vqa",
        "--dataset",
        "vqav2",
        "--root",
        str(tmp_path / "vqa"),
        "--weights",
        str(d),
        "--out",
        str(out),
        "--batch-size",
        "3",
    ]
    code, res, err = _run(args, capsys)
    assert code == 0, err
    assert res["vqa_acc"] == pytest.approx(np.mean(per_q))
    assert res["vqa_acc_other"] == pytest.approx((per_q[0] + per_q[3]) / 2)
    assert res["vqa_acc_number"] == pytest.approx(per_q[1]) and res["vqa_acc_yes_no"] == 0.0
    rec = json.loads(open(res["record"]).read())
    assert rec["kind"] == "accuracy" and rec["arch"] == "vilt-b32" and rec["workload"]["text_len"] == 16
    assert rec["workload"]["image_size"] == [384, 640] and rec["checkpoint_class"] == "ViltForQuestionAnswering"
    # resumable: a finished record is not redone; a torn partial file is resumed from
    code, again, _ = _run(args, capsys)
    assert code == 0 and again["resumed"] == "complete"
    # bad input: answers outside the label set, a head that does not fit, a root without the files
    bad, _ = _vilt(tmp_path / "labels", "ViltForQuestionAnswering", num_labels=3)
    code, _, err = _run([*args[:-4], "--weights", str(bad), "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "no answer in" in err and "id2label" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(
        [
            "--task",
            "vqa",
            "--dataset",
            "vqav2",
            "--root",
            str(tmp_path),
            "--weights",
            str(d),
            "--out",
            str(tmp_path / "r3"),
        ],
        capsys,
    )
    assert code == 2 and "lacks v2_OpenEnded_mscoco_val2014_questions.json" in err


def test_eval_resumes_from_partial(tmp_path, capsys, monkeypatch):
    """An evaluation killed after its first batch restarts from the partial file, with the same result."""
    from vlpbench.study import evaluate_real

    d, _ = _vilt(
        tmp_path / "ck",
        "ViltForQuestionAnswering",
        num_labels=5,
        id2label=dict(enumerate(ANSWERS)),
        label2id={a: i for i, a in enumerate(ANSWERS)},
    )
    _vqa_root(
        tmp_path / "vqa", [["yes"] * 10, ["2"] * 10, ["no"] * 10, ["cat"] * 10], ["yes/no", "number", "yes/no", "other"]
    )
    args = [
        "--task",
        "vqa",
        "--dataset",
        "vqav2",
        "--root",
        str(tmp_path / "vqa"),
        "--weights",
        str(d),
        "--batch-size",
        "2",
    ]
    code, full, err = _run([*args, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    real_add, calls = evaluate_real.Partial.add, []

    def add_then_die(self, ids, values):
        real_add(self, ids, values)
        calls.append(ids)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_real.Partial, "add", add_then_die)
    assert main(["eval", *args, "--out", str(tmp_path / "b"), "--no-progress"]) != 0  # the CLI reports the interrupt
    assert "run again to resume" in capsys.readouterr().err
    partial = [p for p in os.listdir(tmp_path / "b") if p.endswith(".partial.jsonl")]
    assert len(partial) == 1
    code, resumed, err = _run([*args, "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert len(calls) == 2  # only the second batch was run again
    assert resumed["vqa_acc"] == full["vqa_acc"] and not os.path.exists(tmp_path / "b" / partial[0])


# ---- NLVR2 -----------------------------------------------------------------------------------------------------
def test_eval_nlvr2_end_to_end(tmp_path, capsys):
    from PIL import Image
    from transformers import AutoTokenizer, ViltImageProcessor

    d, ref = _vilt(
        tmp_path / "nlvr2-ckpt", "ViltForImagesAndTextClassification", num_images=2, modality_type_vocab_size=3
    )
    root = tmp_path / "nlvr2"
    sentences = ["the left image has a cat .", "there is a red car .", "two dog on a mat ."]
    for k in range(3):
        for j in range(2):
            _image(root / "dev" / f"dev-{k}-0-img{j}.png", SIZES[(k + j) % 4], 10 * k + j)
    tok = AutoTokenizer.from_pretrained(d)
    with torch.no_grad():
        px, pm = [], []
        for k in range(3):
            imgs = [Image.open(root / "dev" / f"dev-{k}-0-img{j}.png").convert("RGB") for j in range(2)]
            enc = ViltImageProcessor()(images=imgs, return_tensors="pt")
            px.append(enc["pixel_values"]), pm.append(enc["pixel_mask"])
        preds = []
        for k in range(3):  # one example at a time: each pair padded on its own, as ViltProcessor does
            enc = tok([sentences[k]], padding="max_length", max_length=16, return_tensors="pt")
            logits = ref(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                pixel_values=px[k][None],
                pixel_mask=pm[k][None],
            ).logits
            preds.append(bool(logits.argmax(-1).item() == 1))
    labels = [preds[0], not preds[1], preds[2]]  # 2 of 3 right, by construction
    lines = [
        json.dumps({"identifier": f"dev-{k}-0-0", "sentence": sentences[k], "label": str(labels[k])}) for k in range(3)
    ]
    (root / "dev.json").write_text("\n".join(lines) + "\n")
    args = [
        "--task",
        "nlvr2",
        "--dataset",
        "nlvr2",
        "--root",
        str(root),
        "--weights",
        str(d),
        "--out",
        str(tmp_path / "run"),
        "--batch-size",
        "2",
    ]
    code, res, err = _run(args, capsys)
    assert code == 0, err
    assert res["nlvr2_acc"] == pytest.approx(2 / 3) and res["examples"] == 3 and res["split"] == "dev"
    # a record naming one image only; the wrong head for the task
    (root / "dev.json").write_text(
        lines[0]
        + "\n"
        + json.dumps({"identifier": "dev-1-0-0", "sentence": "a cat .", "label": "True", "left_image": "x.png"})
        + "\n"
    )
    code, _, err = _run([*args[:-4], "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "dev.json" in err and "line 2 names one image" in err
    qa, _ = _vilt(tmp_path / "qa", "ViltForQuestionAnswering", num_labels=5, id2label=dict(enumerate(ANSWERS)))
    code, _, err = _run(["--task", "nlvr2", "--dataset", "nlvr2", "--root", str(root), "--weights", str(qa)], capsys)
    assert code == 2 and "is a ViltForQuestionAnswering" in err and "ViltForImagesAndTextClassification" in err


# ---- retrieval (Karpathy split) and zero-shot -----------------------------------------------------------------
CAPTIONS = [["a red car .", "a car on a mat ."], ["a cat on a mat .", "a cat ."], ["a dog .", "two dog ."]]


def _karpathy(root, dataset="flickr30k"):
    images = []
    for i, caps in enumerate(CAPTIONS):
        _image(root / f"{i}.jpg", SIZES[i], 50 + i)
        images.append(
            {
                "filename": f"{i}.jpg",
                "split": "test",
                "imgid": i,
                "sentences": [{"raw": c, "tokens": c.split()} for c in caps],
            }
        )
    (root / f"dataset_{dataset}.json").write_text(json.dumps({"images": images}))
    return [root / f"{i}.jpg" for i in range(3)], [c for caps in CAPTIONS for c in caps]


def _recall_by_hand(sim, owners, k=1):
    """R@k both ways with plain loops: image query -> any own caption in its top k; text query -> own image."""
    n_img, n_txt = sim.shape
    tr = np.mean([any(owners[j] == i for j in np.argsort(-sim[i])[:k]) for i in range(n_img)])
    ir = np.mean([owners[j] in np.argsort(-sim[:, j])[:k] for j in range(n_txt)])
    return tr, ir


def test_eval_retrieval_vilt_itm_and_shortlist(tmp_path, capsys):
    from transformers import AutoTokenizer

    d, ref = _vilt(tmp_path / "itm", "ViltForImageAndTextRetrieval")
    paths, texts = _karpathy(tmp_path / "f30k")
    owners = [i for i, caps in enumerate(CAPTIONS) for _ in caps]
    tok = AutoTokenizer.from_pretrained(d)
    with torch.no_grad():
        sim = np.array([[ref(**_vilt_inputs([p], [t], tok)).logits.item() for t in texts] for p in paths])
    tr1, ir1 = _recall_by_hand(sim, owners)
    args = [
        "--task",
        "retrieval",
        "--dataset",
        "flickr30k",
        "--root",
        str(tmp_path / "f30k"),
        "--weights",
        str(d),
        "--batch-size",
        "4",
    ]
    code, res, err = _run([*args, "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert res["tr_r1"] == pytest.approx(tr1) and res["ir_r1"] == pytest.approx(ir1)
    assert res["pairs_scored"] == 18 and "every image-text pair" in res["protocol"]["scoring"]
    assert res["tr_r10"] == 1.0 and res["ir_r10"] == 1.0  # 3 images, 6 texts: everything is in the top 10
    # the ViLT protocol of re-ranking a shortlist (here: the top 2 by a CLIP's cosine)
    clip, _ = _clip(tmp_path / "clip")
    code, short, err = _run(
        [*args, "--out", str(tmp_path / "run2"), "--shortlist", "2", "--shortlist-weights", str(clip)], capsys
    )
    assert code == 0, err
    assert short["pairs_scored"] < 18 and "shortlist: the top 2" in short["protocol"]["scoring"]


def _clip_reference(model, paths, texts, tok):
    from PIL import Image
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    px = proc(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    enc = tok(texts, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        return model(pixel_values=px, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits_per_image


def test_eval_retrieval_clip_and_zero_shot(tmp_path, capsys):
    from transformers import AutoTokenizer

    d, ref = _clip(tmp_path / "clip")
    tok = AutoTokenizer.from_pretrained(d)
    paths, texts = _karpathy(tmp_path / "coco", "coco")
    owners = [i for i, caps in enumerate(CAPTIONS) for _ in caps]
    tr1, ir1 = _recall_by_hand(_clip_reference(ref, paths, texts, tok).numpy(), owners)
    code, res, err = _run(
        [
            "--task",
            "retrieval",
            "--dataset",
            "coco",
            "--root",
            str(tmp_path / "coco"),
            "--weights",
            str(d),
            "--out",
            str(tmp_path / "run"),
        ],
        capsys,
    )
    assert code == 0, err
    assert res["tr_r1"] == pytest.approx(tr1) and res["ir_r1"] == pytest.approx(ir1)
    assert res["arch"] == "clip-vit-b32" and "whole gallery" in res["protocol"]["scoring"]
    # zero-shot over class folders
    classes = ["cat", "dog", "red_car"]
    files = []
    for k, c in enumerate(classes):
        for j in range(2):
            files.append(tmp_path / "folder" / "val" / c / f"{j}.png")
            _image(files[-1], SIZES[(k + j) % 4], 70 + 2 * k + j)
    logits = _clip_reference(ref, files, [f"a photo of a {c.replace('_', ' ')}." for c in classes], tok)
    top1 = np.mean([int(logits[i].argmax()) == i // 2 for i in range(6)])
    code, res, err = _run(
        [
            "--task",
            "zero-shot",
            "--dataset",
            "imagefolder",
            "--root",
            str(tmp_path / "folder"),
            "--weights",
            str(d),
            "--out",
            str(tmp_path / "run"),
        ],
        capsys,
    )
    assert code == 0, err
    assert res["top1"] == pytest.approx(top1) and res["classes"] == 3 and res["images"] == 6
    # a ViLT checkpoint for zero-shot; a truncated safetensors file
    vilt, _ = _vilt(tmp_path / "vilt", "ViltForImageAndTextRetrieval")
    code, _, err = _run(
        ["--task", "zero-shot", "--dataset", "imagefolder", "--root", str(tmp_path / "folder"), "--weights", str(vilt)],
        capsys,
    )
    assert code == 2 and "is a 'vilt' checkpoint; accepted for --task zero-shot: CLIPModel" in err
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[:1000])
    code, _, err = _run(
        [
            "--task",
            "retrieval",
            "--dataset",
            "coco",
            "--root",
            str(tmp_path / "coco"),
            "--weights",
            str(d),
            "--out",
            str(tmp_path / "r2"),
        ],
        capsys,
    )
    assert code == 2 and "model.safetensors' cannot be read" in err and len(err.strip().splitlines()) == 1


# ---- the report's latency-versus-accuracy view ------------------------------------------------------------------
def test_report_joins_measured_accuracy_with_latency_and_quotes_the_paper(tmp_path, capsys):
    """compare --weights + eval + report: the VQA point is measured (filled), the others are the paper's (hollow)."""
    d, _ = _vilt(
        tmp_path / "ck",
        "ViltForQuestionAnswering",
        num_labels=5,
        id2label=dict(enumerate(ANSWERS)),
        label2id={a: i for i, a in enumerate(ANSWERS)},
    )
    _vqa_root(
        tmp_path / "vqa", [["yes"] * 10, ["2"] * 10, ["no"] * 10, ["cat"] * 10], ["yes/no", "number", "yes/no", "other"]
    )
    fast = ["--iters", "3", "--min-time", "0", "--warmup", "1", "--threads", "1", "--no-flops", "--in-process"]
    assert main(["compare", "--arch", "vilt", "--weights", str(d), "--out", str(tmp_path / "lat"), *fast]) == 0
    code, res, err = _run(
        [
            "--task",
            "vqa",
            "--dataset",
            "vqav2",
            "--root",
            str(tmp_path / "vqa"),
            "--weights",
            str(d),
            "--out",
            str(tmp_path / "acc"),
        ],
        capsys,
    )
    assert code == 0, err
    assert main(["report", str(tmp_path / "lat"), str(tmp_path / "acc"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "figures" / "accuracy_view.png").is_file()
    with open(tmp_path / "rep" / "tables" / "accuracy-view.csv") as f:
        rows = {(r[0], r[1]): r for r in __import__("csv").reader(f)}
    vqa = rows[("VQAv2: VQA accuracy (%)", "vilt-b32")]
    assert float(vqa[2]) == pytest.approx(100 * res["vqa_acc"]) and vqa[3].startswith("measured: `vlpbench eval`")
    assert "image size 384x640 + text length 16" in vqa[7]
    nlvr2 = rows[("NLVR2: accuracy (%)", "vilt-b32")]
    assert float(nlvr2[2]) == 76.13 and nlvr2[3].startswith("paper: kim2021vilt, Table 2")
    lat = json.loads(next(p for p in (tmp_path / "lat").glob("*.json") if p.name != "run.json").read_text())
    assert float(vqa[4]) == pytest.approx(lat["total"]["median_ms"])
