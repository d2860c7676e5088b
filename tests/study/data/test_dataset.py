"""Splits, Datasets, collate and statistics of the generated data."""

import pytest
import torch
from torch.utils.data import DataLoader

from vlpbench.errors import VlpbenchError
from vlpbench.study.data import (
    NEGATIVE_KINDS,
    QUESTION_TYPES,
    DatasetConfig,
    SceneConfig,
    SyntheticData,
    collate,
    degenerate_warnings,
    format_statistics,
    split_statistics,
)
from vlpbench.study.data.dataset import _build_split, image_digest

CONFIG = DatasetConfig(scene=SceneConfig(canvas=64), n_train=200, n_val=40, n_test=40, seed=11)


@pytest.fixture(scope="module")
def data():
    return SyntheticData(CONFIG)


def test_same_seed_same_data_other_seed_other_data(data):
    again = SyntheticData(CONFIG)
    for name in ("train", "val", "test"):
        a, b = data.split(name), again.split(name)
        assert torch.equal(a.images, b.images)
        assert a.captions == b.captions and a.questions == b.questions and a.matches == b.matches
    other = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=200, n_val=40, n_test=40, seed=12))
    assert not torch.equal(other.split("train").images, data.split("train").images)
    assert other.split("train").captions != data.split("train").captions


def test_splits_are_disjoint_by_seed_and_by_image(data):
    seeds = {n: {s.seed for s in data.split(n).scenes} for n in ("train", "val", "test")}
    digests = {n: {image_digest(img.numpy()) for img in data.split(n).images} for n in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not seeds[a] & seeds[b]
        assert not digests[a] & digests[b]
    assert [len(data.split(n)) for n in ("train", "val", "test")] == [200, 40, 40]


def test_a_split_skips_images_an_earlier_split_rendered():
    first = _build_split(CONFIG, "val", set())
    seen = {image_digest(img.permute(1, 2, 0).numpy()) for img in first.images[:5]}
    again = _build_split(CONFIG, "val", set(seen))  # it adds its own images to the set it is given
    assert again.skipped_duplicates == 5 and len(again) == 40
    assert not seen & {image_digest(img.permute(1, 2, 0).numpy()) for img in again.images}


def test_growing_train_keeps_val_and_test(data):
    bigger = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=250, n_val=40, n_test=40, seed=11))
    assert torch.equal(bigger.split("test").images, data.split("test").images)
    assert torch.equal(bigger.split("train").images[:200], data.split("train").images)


def test_item_and_batch_layouts(data):
    checks = {
        "retrieval": (data.retrieval("train"), {"image_index": torch.long}),
        "qa": (data.qa("train"), {"answer": torch.long, "question_type": torch.long, "relational": torch.bool}),
        "matching": (data.matching("train"), {"label": torch.long, "negative_kind": torch.long}),
    }
    for name, (dataset, extra) in checks.items():
        batch = next(iter(DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate)))
        assert batch["pixel_values"].shape == (8, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
        assert 0 <= float(batch["pixel_values"].min()) and float(batch["pixel_values"].max()) <= 1
        assert batch["input_ids"].shape == (8, 40) and batch["attention_mask"].shape == (8, 40)
        assert bool((batch["input_ids"][:, 0] == data.tokenizer.cls_token_id).all())
        for key, dtype in extra.items():
            assert batch[key].shape == (8,) and batch[key].dtype == dtype, (name, key)
    assert len(data.retrieval("train")) == 200 * CONFIG.captions_per_image


def test_items_point_at_their_own_scene(data):
    qa, split = data.qa("val"), data.split("val")
    k = 17
    i, q = qa.items[k]
    item = qa[k]
    assert torch.equal(item["pixel_values"], split.images[i].float() / 255)
    assert data.answers[int(item["answer"])] == q.answer
    assert QUESTION_TYPES[int(item["question_type"])] == q.qtype
    assert data.tokenizer.decode(item["input_ids"]) == q.text
    m = data.matching("val")[3]
    assert NEGATIVE_KINDS[int(m["negative_kind"])] == split.matches[3].kind


def test_gallery_maps_texts_to_images(data):
    g = data.gallery("test")
    assert g.pixel_values.shape == (40, 3, 64, 64)
    assert g.input_ids.shape == (200, 40) and g.text_to_image.tolist() == [i // 5 for i in range(200)]
    assert data.tokenizer.decode(g.input_ids[7]) == data.split("test").captions[1][2]


@pytest.mark.parametrize("label_by, classes", [("object", 2), ("shape", 4), ("colour_shape", 19)])
def test_detection_boxes_and_labels(data, label_by, classes):
    det = data.detection("train", label_by=label_by)
    assert det.num_classes == classes
    batch = collate([det[0], det[1], det[2]])
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    for k in range(3):
        scene = data.split("train").scenes[k]
        boxes, labels = batch["boxes"][k], batch["labels"][k]
        assert boxes.shape == (len(scene.objects), 4) and labels.shape == (len(scene.objects),)
        assert torch.allclose(boxes, torch.tensor([o.box for o in scene.objects]))
        for o, label in zip(scene.objects, labels.tolist()):
            name = det.class_names[label]
            assert label >= 1 and name in ("object", o.shape, f"{o.colour} {o.shape}")
    with pytest.raises(VlpbenchError, match="label_by"):
        data.detection("train", label_by="size")


def test_statistics_show_balance(data):
    stats = split_statistics(data.split("train"))
    assert stats["scenes"] == 200 and set(stats["question_types"]) == set(QUESTION_TYPES)
    assert abs(stats["true_share"] - 0.5) < 1e-9
    for qtype in ("left_of", "above", "horizontal", "vertical", "size"):
        assert stats["majority_share_by_type"][qtype] < 0.62, qtype  # yes/no and sides near even
    assert stats["majority_share"] < 0.15
    text = format_statistics(stats)
    assert "left_of" in text and "majority" in text
    assert data.describe().count("split ") == 3


def test_degenerate_split_is_flagged():
    one_shape = DatasetConfig(scene=SceneConfig(canvas=64, shapes=("circle",)), n_train=30, n_val=5, n_test=5)
    stats = split_statistics(SyntheticData(one_shape).split("train"))
    warnings = degenerate_warnings(stats)
    assert any("'shape'" in w and "circle" in w for w in warnings)
    assert "WARNING" in format_statistics(stats)


def test_unknown_split_and_bad_config_raise():
    d = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=4, n_val=2, n_test=2))
    with pytest.raises(VlpbenchError, match="dev"):
        d.qa("dev")
    for bad in (
        dict(n_train=1),
        dict(seed=-1),
        dict(captions_per_image=0),
        dict(question_types=("colour", "mood")),
        dict(max_length=20),
    ):
        with pytest.raises(VlpbenchError, match=next(iter(bad)) if "question_types" not in bad else "mood"):
            SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), **bad))


def test_a_few_thousand_scenes_generate_every_split():
    # how long this takes is measured by benchmarks/test_data_generation.py, not asserted here
    data = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=2000, n_val=100, n_test=100))
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [2000, 100, 100]
