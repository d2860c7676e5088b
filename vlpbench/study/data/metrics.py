"""Accuracy metrics of the three tasks. All values are fractions in [0, 1].

Ties are counted against the model: a candidate scoring *equal* to the right one ranks above it, so a
constant similarity matrix scores chance-level recall, never perfect.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlpbench.errors import bad_value
from vlpbench.study.data.language import NEGATIVE_KINDS, QUESTION_TYPES


def _as_tensor(x, name: str, dim: int) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != dim:
        raise bad_value(f"{name} shape", tuple(t.shape), f"a {dim}-d tensor")
    return t


def retrieval_recall(similarity, text_to_image, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways from ``similarity`` [n_images, n_texts] and ``text_to_image`` [n_texts].

    ``tr_r{k}`` (text retrieval, image query): an image counts if any of its captions is in its top k texts.
    ``ir_r{k}`` (image retrieval, text query): a text counts if its image is in its top k images.
    """
    sim = _as_tensor(similarity, "similarity", 2).float()
    owner = _as_tensor(text_to_image, "text_to_image", 1).long()
    n_images, n_texts = sim.shape
    if owner.numel() != n_texts:
        raise bad_value("text_to_image length", owner.numel(), f"one entry per text column ({n_texts})")
    if n_texts and (owner.min() < 0 or owner.max() >= n_images):
        raise bad_value(
            "text_to_image entry",
            int(owner.max() if owner.max() >= n_images else owner.min()),
            f"image indices 0 to {n_images - 1}",
        )
    if any(int(k) < 1 for k in ks):
        raise bad_value("ks", tuple(ks), "positive integers")
    truth = torch.zeros(n_images, n_texts, dtype=torch.bool)
    truth[owner, torch.arange(n_texts)] = True  # [n_images, n_texts]
    if not bool(truth.any(dim=1).all()):
        missing = int((~truth.any(dim=1)).nonzero()[0])
        raise bad_value("text_to_image", f"no caption for image {missing}", "at least one text per image")

    # Image query: rank of its best caption = texts of other images scoring >= that caption.
    best = sim.masked_fill(~truth, float("-inf")).max(dim=1, keepdim=True).values  # [n_images, 1]
    tr_rank = ((sim >= best) & ~truth).sum(dim=1)  # [n_images]
    # Text query: rank of its image = other images scoring >= it.
    own = sim[owner, torch.arange(n_texts)].unsqueeze(0)  # [1, n_texts]
    ir_rank = ((sim >= own) & ~truth).sum(dim=0)  # [n_texts]
    out: dict[str, float] = {}
    for k in ks:
        out[f"tr_r{k}"] = float((tr_rank < k).double().mean())
        out[f"ir_r{k}"] = float((ir_rank < k).double().mean())
    return out


def qa_accuracy(predictions, answers, relational, question_type=None) -> dict[str, float]:
    """Accuracy of predicted answer indices, overall and split non-relational / relational.

    ``predictions`` and ``answers`` are int [N] (or logits [N, A] for ``predictions``); ``relational`` bool [N];
    with ``question_type`` int [N] (indices into QUESTION_TYPES) the accuracy of each type is added.
    A group with no questions is reported as NaN, never as 0 or 1.
    """
    pred = torch.as_tensor(predictions)
    if pred.dim() == 2:
        pred = pred.argmax(dim=1)
    pred = _as_tensor(pred, "predictions", 1).long()
    gold = _as_tensor(answers, "answers", 1).long()
    rel = _as_tensor(relational, "relational", 1).bool()
    if not pred.numel() == gold.numel() == rel.numel():
        raise bad_value("lengths", (pred.numel(), gold.numel(), rel.numel()), "predictions, answers, relational alike")
    correct = (pred == gold).double()

    def mean(mask: torch.Tensor) -> float:
        return float(correct[mask].mean()) if bool(mask.any()) else float("nan")

    out = {
        "accuracy": mean(torch.ones_like(rel)),
        "non_relational": mean(~rel),
        "relational": mean(rel),
        "n": int(rel.numel()),
        "n_relational": int(rel.sum()),
    }
    if question_type is not None:
        qt = _as_tensor(question_type, "question_type", 1).long()
        for i, name in enumerate(QUESTION_TYPES):
            if bool((qt == i).any()):
                out[f"type_{name}"] = mean(qt == i)
    return out


def matching_accuracy(predictions, labels, negative_kind) -> dict[str, float]:
    """Accuracy of true/false predictions, overall and per kind of example.

    ``predictions`` int/bool [N] (1 = the text matches the image); ``labels`` int [N]; ``negative_kind``
    int [N] indexing NEGATIVE_KINDS. ``none`` is accuracy on true statements; ``random`` / ``binding`` /
    ``relation`` are the share of those negatives rejected. NaN where a kind has no examples.
    """
    pred = _as_tensor(predictions, "predictions", 1).long()
    gold = _as_tensor(labels, "labels", 1).long()
    kind = _as_tensor(negative_kind, "negative_kind", 1).long()
    if not pred.numel() == gold.numel() == kind.numel():
        raise bad_value("lengths", (pred.numel(), gold.numel(), kind.numel()), "predictions, labels, kinds alike")
    correct = (pred == gold).double()
    out = {"accuracy": float(correct.mean()) if correct.numel() else float("nan"), "n": int(correct.numel())}
    for i, name in enumerate(NEGATIVE_KINDS):
        mask = kind == i
        out[name] = float(correct[mask].mean()) if bool(mask.any()) else float("nan")
    return out


def pairwise_matching(scores, labels, negative_kind) -> dict[str, float]:
    """Threshold-free matching: the share of (true statement, its negative) pairs whose true statement scores
    higher, overall and per negative kind (chance 0.5; ties count half).

    The examples come in pairs, each true statement directly followed by the negative made from it (the order
    :class:`~vlpbench.study.data.MatchingDataset` keeps): ``scores`` float [2P], ``labels`` [2P] = 1, 0, 1, 0, ...,
    ``negative_kind`` [2P] with the kind on every second item.  Unlike :func:`matching_accuracy` no model
    can score well by answering one way: a model that ignores the image scores 0.5 on binding and relation
    pairs, whose texts use the same words.
    """
    s = _as_tensor(scores, "scores", 1).double()
    gold = _as_tensor(labels, "labels", 1).long()
    kind = _as_tensor(negative_kind, "negative_kind", 1).long()
    if not s.numel() == gold.numel() == kind.numel() or s.numel() % 2:
        raise bad_value("lengths", (s.numel(), gold.numel(), kind.numel()), "equal and even (true, negative pairs)")
    if bool((gold[0::2] != 1).any()) or bool((gold[1::2] != 0).any()):
        raise bad_value("labels", gold[:6].tolist(), "alternating 1, 0 (each true statement before its negative)")
    diff = s[0::2] - s[1::2]
    win = (diff > 0).double() + 0.5 * (diff == 0).double()
    pair_kind = kind[1::2]
    out = {"pairwise": float(win.mean()) if win.numel() else float("nan")}
    for i, name in enumerate(NEGATIVE_KINDS[1:], start=1):
        mask = pair_kind == i
        out[f"pairwise_{name}"] = float(win[mask].mean()) if bool(mask.any()) else float("nan")
    return out
