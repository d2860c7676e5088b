"""Metrics on hand-made similarity matrices and predictions whose answers are worked out by hand."""

import math

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.study.data import (
    NEGATIVE_KINDS,
    QUESTION_TYPES,
    SyntheticData,
    matching_accuracy,
    pairwise_matching,
    qa_accuracy,
    retrieval_recall,
)


def test_perfect_and_reversed_one_caption_each():
    assert retrieval_recall(torch.eye(3), [0, 1, 2], ks=(1, 2)) == {"tr_r1": 1, "ir_r1": 1, "tr_r2": 1, "ir_r2": 1}
    sim = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])  # truth is the smallest in row and column
    r = retrieval_recall(sim, [0, 1, 2], ks=(1, 2, 3))
    assert r["tr_r1"] == 0 and r["tr_r2"] == 0 and r["tr_r3"] == 1
    assert r["ir_r1"] == 0 and r["ir_r2"] == 0 and r["ir_r3"] == 1


def test_several_captions_per_image():
    # 2 images, 4 texts: texts 0,1 -> image 0; texts 2,3 -> image 1.
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.2], [0.3, 0.4, 0.5, 0.6]])
    r = retrieval_recall(sim, [0, 0, 1, 1], ks=(1, 2, 3))
    # image 0: best own text 0.9 is top -> rank 0.  image 1: best own 0.6 is top -> rank 0.
    assert r["tr_r1"] == 1.0
    # text 0: 0.9 vs 0.3 ok; text 1: 0.1 vs 0.4 miss; text 2: 0.5 vs 0.8 miss; text 3: 0.6 vs 0.2 ok.
    assert r["ir_r1"] == 0.5 and r["ir_r2"] == 1.0
    # Move image 0's best own text below one of image 1's texts: rank 1.
    sim[0, 0] = 0.7
    r = retrieval_recall(sim, [0, 0, 1, 1], ks=(1, 2))
    assert r["tr_r1"] == 0.5 and r["tr_r2"] == 1.0


def test_ties_count_against_the_model():
    r = retrieval_recall(torch.zeros(4, 8), [i // 2 for i in range(8)], ks=(1, 4, 10))
    assert r["tr_r1"] == 0 and r["ir_r1"] == 0  # constant scores are not perfect
    assert r["ir_r4"] == 1 and r["tr_r10"] == 1  # 3 other images tie; 6 other texts tie


def test_retrieval_bad_inputs():
    with pytest.raises(VlpbenchError, match="text_to_image length"):
        retrieval_recall(torch.eye(3), [0, 1])
    with pytest.raises(VlpbenchError, match="image indices"):
        retrieval_recall(torch.eye(3), [0, 1, 5])
    with pytest.raises(VlpbenchError, match="no caption for image 2"):
        retrieval_recall(torch.zeros(3, 3), [0, 1, 1])
    with pytest.raises(VlpbenchError, match="similarity shape"):
        retrieval_recall(torch.zeros(3), [0, 1, 2])


def test_qa_accuracy_split_by_relational_and_type():
    answers = torch.tensor([0, 1, 2, 3, 4, 5])
    preds = torch.tensor([0, 1, 9, 3, 9, 9])
    rel = torch.tensor([False, False, False, True, True, True])
    qt = torch.tensor([0, 0, 1, 7, 7, 9])
    r = qa_accuracy(preds, answers, rel, qt)
    assert r["accuracy"] == 0.5 and math.isclose(r["non_relational"], 2 / 3) and math.isclose(r["relational"], 1 / 3)
    assert r["n"] == 6 and r["n_relational"] == 3
    assert r[f"type_{QUESTION_TYPES[0]}"] == 1.0 and r[f"type_{QUESTION_TYPES[7]}"] == 0.5
    assert r[f"type_{QUESTION_TYPES[9]}"] == 0.0 and f"type_{QUESTION_TYPES[2]}" not in r
    logits = torch.nn.functional.one_hot(preds, 10).float()
    assert qa_accuracy(logits, answers, rel) == {k: v for k, v in r.items() if not k.startswith("type_")}


def test_qa_accuracy_empty_group_is_nan():
    r = qa_accuracy([1, 2], [1, 0], [False, False])
    assert r["non_relational"] == 0.5 and math.isnan(r["relational"])
    with pytest.raises(VlpbenchError, match="lengths"):
        qa_accuracy([1, 2], [1], [False, False])


def test_matching_accuracy_per_kind():
    k = {name: i for i, name in enumerate(NEGATIVE_KINDS)}
    labels = [1, 1, 0, 0, 0, 0]
    kinds = [k["none"], k["none"], k["random"], k["binding"], k["binding"], k["relation"]]
    preds = [1, 0, 0, 1, 0, 1]
    r = matching_accuracy(preds, labels, kinds)
    assert r["none"] == 0.5 and r["random"] == 1.0 and r["binding"] == 0.5 and r["relation"] == 0.0
    assert r["accuracy"] == 0.5 and r["n"] == 6
    assert math.isnan(matching_accuracy([1], [1], [0])["binding"])
    with pytest.raises(VlpbenchError, match="lengths"):
        matching_accuracy([1, 0], [1], [0])


def test_pairwise_matching_per_kind_and_chance():
    k = {name: i for i, name in enumerate(NEGATIVE_KINDS)}
    labels = [1, 0] * 4
    kinds = [0, k["random"], 0, k["binding"], 0, k["binding"], 0, k["relation"]]
    scores = [2.0, 1.0, 0.0, 1.0, 3.0, 3.0, 5.0, -1.0]  # win, loss, tie, win
    r = pairwise_matching(scores, labels, kinds)
    assert r["pairwise_random"] == 1.0 and r["pairwise_binding"] == 0.25 and r["pairwise_relation"] == 1.0
    assert r["pairwise"] == 2.5 / 4
    # a score that ignores the text (the same for both texts of a pair) sits at chance
    assert pairwise_matching([0.3, 0.3] * 4, labels, kinds)["pairwise"] == 0.5
    with pytest.raises(VlpbenchError, match="alternating"):
        pairwise_matching([1.0, 0.0], [0, 1], [k["random"], 0])
    with pytest.raises(VlpbenchError, match="even"):
        pairwise_matching([1.0, 0.0, 1.0], [1, 0, 1], [0, 1, 0])


def test_generated_matches_come_in_true_negative_pairs():
    from vlpbench.study.data import DatasetConfig, SceneConfig

    data = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=12, n_val=4, n_test=4))
    matches = data.split("train").matches
    assert len(matches) % 2 == 0
    for pos, neg in zip(matches[0::2], matches[1::2]):
        assert pos.label and not neg.label and pos.kind == "none" and neg.kind != "none"
        assert pos.scene_index == neg.scene_index
