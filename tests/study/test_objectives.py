"""Trainer options from the seed papers: BERT masking, ALBEF hard negatives and ITC, ViLT WPA, their config errors."""

from __future__ import annotations

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.study.data import SyntheticData
from vlpbench.study.objectives import FIRST_WORD_ID, MASK_ID, ObjectiveConfig, mask_tokens
from vlpbench.study.training import DataSpec, IndexedTask, Stream, TrainConfig, build_task_model, family_of

load_all()
SPEC = DataSpec(n_train=24, n_val=8, n_test=8)


@pytest.fixture(scope="module")
def data():
    return SyntheticData(SPEC.dataset_config())


def _batches(data, n=8):
    return {t: Stream(IndexedTask(data, t, "train"), n, 0, 0, 1).next() for t in ("retrieval", "qa", "matching")}


def test_bert_masking_replaces_80_10_10_and_only_words():
    torch.manual_seed(0)
    ids = torch.randint(FIRST_WORD_ID, 60, (400, 30))
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    mask = torch.ones_like(ids)
    out, labels = mask_tokens(ids, mask, torch.Generator().manual_seed(0), 0.15, "bert", vocab_size=60)
    picked = labels >= 0
    assert abs(float(picked.float().mean()) - 0.15 * 28 / 30) < 0.01
    assert not bool(picked[:, 0].any() or picked[:, -1].any())  # specials are never masked
    assert torch.equal(labels[picked], ids[picked]) and torch.equal(out[~picked], ids[~picked])
    became_mask = float((out[picked] == MASK_ID).float().mean())
    kept = float((out[picked] == ids[picked]).float().mean())  # 10% kept (+ random draws equal to the word)
    assert abs(became_mask - 0.8) < 0.03 and abs(kept - 0.1 - 0.1 / 55) < 0.03
    plain, _ = mask_tokens(ids, mask, torch.Generator().manual_seed(0), 0.15, "mask")
    assert bool((plain[picked] == MASK_ID).all())


def test_family_comes_from_interaction_tags():
    assert family_of("dual-encoder") == "dual" and family_of("vse-gpo") == "dual"
    assert family_of("single-stream") == "fusion" and family_of("co-attention") == "fusion"


def test_hard_negatives_come_from_other_images_and_follow_similarity(data):
    task = build_task_model(
        TrainConfig(arch="vilt-small", tiny=True, data=SPEC, objectives=ObjectiveConfig(itc=1.0, hard_negatives=True)),
        data,
    )
    index = torch.tensor([0, 0, 1, 2, 3])
    sim = torch.zeros(5, 5)
    sim[:, 3] = 50.0  # caption 3 is everyone's hardest negative
    neg = task.negative_texts(index, sim, torch.Generator().manual_seed(0))
    assert bool((index[neg] != index).all())
    assert neg[:3].tolist() == [3, 3, 3] and int(neg[3]) != 3


@pytest.mark.parametrize("arch", ["vilt-small", "vilbert-small"])
def test_wpa_itc_and_bert_masking_train(data, arch):
    objectives = ObjectiveConfig(wpa=0.1, itc=1.0, hard_negatives=True, masking="bert")
    task = build_task_model(TrainConfig(arch=arch, tiny=True, data=SPEC, objectives=objectives), data)
    b = _batches(data)
    loss, parts = task(b["retrieval"], b["qa"], b["matching"], torch.Generator().manual_seed(0))
    assert {"itc", "mlm", "itm", "wpa", "match", "qa"} == set(parts)
    want = parts["itc"] + parts["mlm"] + parts["itm"] + 0.1 * parts["wpa"] + parts["match"] + parts["qa"]
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert task.itc_image.weight.grad is not None


def test_objective_config_errors():
    with pytest.raises(VlpbenchError, match="invalid masking 'all'"):
        ObjectiveConfig(masking="all").validate()
    with pytest.raises(VlpbenchError, match="invalid hard_negatives"):
        ObjectiveConfig(hard_negatives=True).validate()
    with pytest.raises(VlpbenchError, match="invalid wpa weight -1"):
        ObjectiveConfig(wpa=-1).validate()
    with pytest.raises(VlpbenchError, match="invalid augment 'flip'"):
        TrainConfig(arch="vilt-small", augment="flip").validate()


def test_dual_qa_head_standardises_each_embedding_over_the_batch(data):
    """qa_norm="batch" removes what every image embedding shares (clip-small's class token at init), so the head
    reads only what differs between images; "none" keeps it.  In eval mode a sample's input to the head does not
    depend on the rest of its batch (running statistics)."""
    from vlpbench.types import InteractionOutput

    torch.manual_seed(0)
    img, txt = torch.randn(8, 32), torch.randn(8, 32)
    shared = 100.0 * torch.randn(32)
    pair = {}
    for norm in ("batch", "none"):
        task = build_task_model(TrainConfig(arch="clip-small", tiny=True, data=SPEC, qa_norm=norm), data)
        task.train()
        plain = task.pooled_pair(InteractionOutput(image_embeds=img, text_embeds=txt))
        shifted = task.pooled_pair(InteractionOutput(image_embeds=img + shared, text_embeds=txt))
        pair[norm] = (plain, shifted)
        task.eval()
        whole = task.pooled_pair(InteractionOutput(image_embeds=img, text_embeds=txt))
        half = task.pooled_pair(InteractionOutput(image_embeds=img[:4], text_embeds=txt[:4]))
        torch.testing.assert_close(whole[:4], half)
    torch.testing.assert_close(pair["batch"][0], pair["batch"][1], atol=1e-4, rtol=1e-4)
    assert float((pair["none"][0] - pair["none"][1]).abs().max()) > 0.1


def test_qa_norm_errors_and_old_configs():
    with pytest.raises(VlpbenchError, match="invalid qa_norm 'layer'"):
        TrainConfig(arch="clip-small", qa_norm="layer").validate()
    with pytest.raises(VlpbenchError, match="invalid batch_size 1"):
        TrainConfig(arch="clip-small", batch_size=1).validate()
    TrainConfig(arch="clip-small", batch_size=1, qa_norm="none").validate()
    TrainConfig(arch="vilt-small", batch_size=1).validate()  # fusion models have no such head
    old = TrainConfig(arch="clip-small").to_dict()
    del old["qa_norm"]  # a run written before the option: it trained without the standardisation
    assert TrainConfig.from_dict(old).qa_norm == "none"
