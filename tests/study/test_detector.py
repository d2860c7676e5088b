"""The study's detector: what its box classifier learns to tell apart, and the region models built on it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.study.data import SyntheticData
from vlpbench.study.detector import DetectorConfig, train_detector
from vlpbench.study.runner import DATA_DESIGNS
from vlpbench.study.training import TrainConfig, build_task_model, detector_classes

load_all()
SPEC = dataclasses.replace(DATA_DESIGNS["default"], n_train=16, n_val=8, n_test=8)


@pytest.fixture(scope="module")
def data():
    return SyntheticData(SPEC.dataset_config())


@pytest.mark.parametrize("labels, classes", [("shape", 1 + 2), ("colour_shape", 1 + 6 * 2), ("object", 2)])
def test_labels_set_the_box_classes_and_the_region_model_follows(tmp_path, data, labels, classes):
    torch.set_num_threads(1)
    cfg = DetectorConfig(arch="uniter-small", steps=1, batch_size=2, tiny=True, labels=labels)
    summary = train_detector(cfg, data, str(tmp_path), progress=False)
    assert summary["num_classes"] == classes and summary["config"]["labels"] == labels
    assert json.loads((tmp_path / "detector.json").read_text())["num_classes"] == classes
    assert detector_classes(summary["weights"]) == classes
    task = build_task_model(TrainConfig(arch="uniter-small", tiny=True, data=SPEC, detector=summary["weights"]), data)
    assert task.model.visual.box_predictor.cls_score.out_features == classes  # the weights load


def test_bad_labels_and_weights_are_clear_errors(tmp_path, data):
    with pytest.raises(VlpbenchError, match="invalid labels 'colour'.*colour_shape"):
        train_detector(DetectorConfig(labels="colour", tiny=True), data, str(tmp_path))
    bad = tmp_path / "not-a-detector.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(VlpbenchError, match="invalid detector weights"):
        detector_classes(str(bad))
