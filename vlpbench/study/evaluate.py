"""Evaluate a trained :class:`~vlpbench.study.objectives.TaskModel` on the three generated tasks.

* retrieval: a gallery of the first ``gallery_images`` test images and their first ``captions`` captions.
  Dual encoders score every pair by cosine similarity of the pooled embeddings; fusion models score
  every pair (all images x all captions, no pre-selection) with the ITM logit margin.  Both families use
  the same gallery, so R@K are comparable; it is smaller than the whole test split because fusion
  scoring costs one forward per pair.
* QA: accuracy over every test question, split non-relational / relational (the QA head of the family).
* matching, threshold-free (the table's numbers): for each true statement and the negative made from it,
  does the true one score higher (``pairwise_random`` / ``_binding`` / ``_relation``; chance 50%)?  Scores
  are the ITM logit margin (fusion) or the cosine similarity (dual encoders).
* matching, thresholded: accuracy over every test statement, split by negative kind.  Fusion: ITM > 0.
  Dual encoders: the cosine similarity above a threshold chosen on the val split (the one maximising val
  accuracy), i.e. no learned classifier beyond the similarity itself.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from vlpbench.store import atomic_write_json
from vlpbench.study.data import (
    SyntheticData,
    collate,
    matching_accuracy,
    pairwise_matching,
    qa_accuracy,
    retrieval_recall,
)
from vlpbench.study.objectives import TaskModel
from vlpbench.study.training import IndexedTask
from vlpbench.types import VisualTokens


def _batches(ds, batch_size: int):
    for s in range(0, len(ds), batch_size):
        yield collate([ds[i] for i in range(s, min(len(ds), s + batch_size))])


def _visual_for(task: TaskModel, pixel_values: torch.Tensor, index: torch.Tensor, split: str):
    return task.visual({"pixel_values": pixel_values, "image_index": index}, split)


@torch.no_grad()
def similarity_matrix(
    task: TaskModel,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    split: str = "test",
    batch_size: int = 256,
) -> torch.Tensor:
    """[N_images, N_texts] scores; pixel_values [N, 3, H, W] are the split's first N images."""
    n, t = len(pixel_values), len(input_ids)
    index = torch.arange(n)
    if task.family == "dual":
        img, txt = [], []
        for s in range(0, n, batch_size):  # image embeddings (texts only fill the batch)
            sl = slice(s, min(n, s + batch_size))
            k = sl.stop - sl.start
            out = task.interact(
                _visual_for(task, pixel_values[sl], index[sl], split),
                input_ids[:1].expand(k, -1),
                attention_mask[:1].expand(k, -1),
            )
            img.append(out.image_embeds)
        for s in range(0, t, batch_size):  # text embeddings (one image fills the batch)
            sl = slice(s, min(t, s + batch_size))
            k = sl.stop - sl.start
            out = task.interact(
                _visual_for(task, pixel_values[:1].expand(k, -1, -1, -1), index[:1].expand(k), split),
                input_ids[sl],
                attention_mask[sl],
            )
            txt.append(out.text_embeds)
        return F.normalize(torch.cat(img), dim=-1) @ F.normalize(torch.cat(txt), dim=-1).t()
    sim = torch.empty(n, t)
    for i in range(n):  # every caption against image i; the image is embedded once
        v = _visual_for(task, pixel_values[i : i + 1], index[i : i + 1], split)
        for s in range(0, t, batch_size):
            sl = slice(s, min(t, s + batch_size))
            k = sl.stop - sl.start
            vk = VisualTokens(
                features=v.features.expand(k, -1, -1),
                mask=v.mask.expand(k, -1),
                boxes=None if v.boxes is None else v.boxes.expand(k, -1, -1),
            )
            sim[i, sl] = task.match_logits(task.interact(vk, input_ids[sl], attention_mask[sl]))
    return sim


@torch.no_grad()
def eval_retrieval(
    task: TaskModel, data: SyntheticData, split: str = "test", gallery_images: int = 100, captions: int = 2
) -> dict[str, float]:
    g = data.gallery(split)
    n = min(gallery_images, len(g.pixel_values))
    per = data.config.captions_per_image
    keep = torch.tensor([i * per + c for i in range(n) for c in range(min(captions, per))])
    sim = similarity_matrix(task, g.pixel_values[:n], g.input_ids[keep], g.attention_mask[keep], split)
    return retrieval_recall(sim, g.text_to_image[keep])


@torch.no_grad()
def eval_qa(task: TaskModel, data: SyntheticData, split: str = "test", batch_size: int = 256) -> dict[str, float]:
    logits, answers, relational, types = [], [], [], []
    for b in _batches(IndexedTask(data, "qa", split), batch_size):
        logits.append(task.qa_logits_of(b, split))
        answers.append(b["answer"])
        relational.append(b["relational"])
        types.append(b["question_type"])
    return qa_accuracy(torch.cat(logits), torch.cat(answers), torch.cat(relational), torch.cat(types))


@torch.no_grad()
def _match_scores(task: TaskModel, data: SyntheticData, split: str, batch_size: int = 256):
    scores, cos, labels, kinds = [], [], [], []
    for b in _batches(IndexedTask(data, "matching", split), batch_size):
        out = task.interact(task.visual(b, split), b["input_ids"], b["attention_mask"])
        scores.append(task.match_logits(out))
        if task.family == "dual":
            cos.append(task.cosine(out))
        labels.append(b["label"])
        kinds.append(b["negative_kind"])
    return (torch.cat(scores), torch.cat(cos) if cos else None, torch.cat(labels), torch.cat(kinds))


def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold t maximising accuracy of ``scores > t`` (midpoints between sorted scores)."""
    s = scores.sort().values
    candidates = torch.cat([s[:1] - 1, (s[1:] + s[:-1]) / 2, s[-1:] + 1])
    acc = ((scores[None, :] > candidates[:, None]) == labels.bool()[None, :]).float().mean(1)
    return float(candidates[int(acc.argmax())])


@torch.no_grad()
def eval_matching(task: TaskModel, data: SyntheticData, split: str = "test") -> dict[str, Any]:
    scores, cos, labels, kinds = _match_scores(task, data, split)
    if task.family == "dual":
        _, val_cos, val_labels, _ = _match_scores(task, data, "val")
        threshold = best_threshold(val_cos, val_labels)
        pred = (cos > threshold).long()
        rule = {"rule": "cosine > threshold chosen on val", "threshold": threshold}
    else:
        pred = (scores > 0).long()
        rule = {"rule": "ITM head"}
    return {**matching_accuracy(pred, labels, kinds), **pairwise_matching(scores, labels, kinds), "_rule": rule}


def evaluate_all(
    task: TaskModel, data: SyntheticData, split: str = "test", gallery_images: int = 100, captions: int = 2
) -> dict[str, Any]:
    """-> {"retrieval.tr_r1": .., "qa.relational": .., "matching.binding": .., ...} plus "_notes"."""
    task.eval()
    metrics: dict[str, Any] = {}
    if task.family == "reference":  # QA models only (the calibration references)
        qa = {f"qa.{k}": float(v) for k, v in eval_qa(task, data, split).items() if isinstance(v, (int, float))}
        return qa | {"_notes": {"retrieval": "not applicable (QA model)", "matching": {"rule": "not applicable"}}}
    for k, v in eval_retrieval(task, data, split, gallery_images, captions).items():
        metrics[f"retrieval.{k}"] = v
    for k, v in eval_qa(task, data, split).items():
        metrics[f"qa.{k}"] = v
    match = eval_matching(task, data, split)
    rule = match.pop("_rule")
    for k, v in match.items():
        metrics[f"matching.{k}"] = v
    notes = {
        "retrieval": f"gallery of {gallery_images} {split} images x {captions} captions, "
        + ("cosine of pooled embeddings" if task.family == "dual" else "ITM over every pair"),
        "matching": rule,
    }
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))} | {"_notes": notes}


def evaluate_run(task: TaskModel, data: SyntheticData, run_dir: str) -> dict[str, Any]:
    """A finished ``vlpbench train`` model on the test split of the data it trained on, scored as the study
    scores a run (:func:`evaluate_all`) and held to the study's non-relational bar; written atomically to
    ``run_dir/metrics.json``."""
    from vlpbench.study.runner import BAR  # the runner imports this module's callers, not the reverse

    metrics = evaluate_all(task, data, "test")
    result = {
        "split": "test",
        "metrics": metrics,
        "bar": {"qa.non_relational": BAR, "passed": metrics["qa.non_relational"] >= BAR},
    }
    atomic_write_json(os.path.join(run_dir, "metrics.json"), result)
    return result


def numeric(metrics: dict[str, Any]) -> list[str]:
    return [k for k, v in metrics.items() if not k.startswith("_") and isinstance(v, float)]
