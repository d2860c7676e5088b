"""The detectron2 backend: same weights as the torchvision backend -> same proposals, logits, boxes and region
features (R50-FPN structure and the BUTD C4 head, tiny sizes); the traps a key mapping falls into; the error
paths when detectron2 is missing or broken (those run without detectron2, by monkeypatching)."""

from __future__ import annotations

import importlib

import pytest
import torch

import vlpbench.presets.region  # noqa: F401  (registers the presets)
from doubles import StageRecorder
from vlpbench.embedders import detectron2_backend
from vlpbench.embedders.region import detectron2_available
from vlpbench.embedders.region_checkpoints import anchor_permutation
from vlpbench.errors import VlpbenchError
from vlpbench.registry import VISUAL
from vlpbench.stages import stage_names

needs_d2 = pytest.mark.skipif(
    not detectron2_available(), reason="detectron2 is not installed (make install-detectron2)"
)

# Both backends configured alike: detectron2's unrounded anchors, batched (pre-filtered) detection NMS.
FPN = dict(tiny=True, anchor_rounding=False, score_thresh=0.01, rpn_post_nms_top_n=40, num_regions=8)
# 66x98: conv1 gives 33x49, where caffe's pool1 (16x24) and detectron2's padded one (17x25) differ
C4 = dict(
    tiny=True,
    depth=50,
    stride_in_1x1=True,
    image_size=(66, 98),
    pooler_resolution=4,
    anchor_rounding=False,
    nms_mode="batched",
    det_nms_boxes="regressed",
    num_classes=21,
    rpn_post_nms_top_n=12,
    num_regions=6,
    score_thresh=0.01,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(name, **kw):
    torch.manual_seed(0)
    ours = VISUAL.build(name, **kw)
    d2 = VISUAL.build(name, backend="detectron2", calibrate_bn=False, **kw)
    d2.load_torchvision_backend_state(ours.state_dict())
    return ours, d2


@pytest.fixture(scope="module")
def fpn_pair():
    return _pair("frcnn-r50-fpn", **FPN)


@pytest.fixture(scope="module")
def c4_pair():
    return _pair("butd-r101-c4", **C4)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.abs().max())))


def _run_both(pair, seed=1, batch=1):
    ours, d2 = pair
    x = ours.make_inputs(batch, generator=torch.Generator().manual_seed(seed), device="cpu")["pixel_values"]
    with torch.no_grad():
        return [m.run_detector(x) for m in (ours, d2)], [m(x) for m in (ours, d2)]


def _tie_order(scores, labels, boxes, tol=1e-6):
    """A canonical order of one image's detections: score order, except that detections whose scores tie to
    within float rounding are put in (label, box) order. Two backends may order a tie either way (seen on CI:
    two scores 3e-8 apart swapped places), and that is not a disagreement."""
    order = torch.arange(len(scores))
    start = 0
    while start < len(scores):
        end = start + 1
        while end < len(scores) and abs(float(scores[end - 1] - scores[end])) <= tol:
            end += 1
        if end - start > 1:
            group = sorted(range(start, end), key=lambda j: (int(labels[j]), [round(float(v), 2) for v in boxes[j]]))
            order[start:end] = torch.tensor(group)
        start = end
    return order


def _dets(det, i):
    return det.scores[i], det.labels[i], det.boxes[i], det.rois[i]


def _assert_equivalent(pair, batch=1):
    (a, b), (out_a, out_b) = _run_both(pair, batch=batch)
    feats_a, props_a, det_a, facts_a = a
    feats_b, props_b, det_b, facts_b = b
    assert facts_a["rpn_post_nms"] == facts_b["rpn_post_nms"] and min(facts_a["rpn_post_nms"]) > 0
    for p, q in zip(props_a, props_b):
        _close(p, q)  # proposals, in the same order
    _close(feats_a, feats_b)  # RoI head output
    _close(det_a.class_scores, det_b.class_scores)  # softmax of the logits, background first in both
    assert min(facts_a["det_kept"]) > 0
    for i in range(batch):
        # the one difference: torchvision drops boxes under 1e-2 px (clipped flat at the border), detectron2 not
        wh = det_b.boxes[i][:, 2:] - det_b.boxes[i][:, :2]
        big = (wh >= 1e-2).all(dim=1)
        assert facts_b["det_kept"][i] - int((~big).sum()) == facts_a["det_kept"][i]
        a_ = [t[_tie_order(det_a.scores[i], det_a.labels[i], det_a.boxes[i])] for t in _dets(det_a, i)]
        kept = [t[big] for t in _dets(det_b, i)]
        b_ = [t[_tie_order(kept[0], kept[1], kept[2])] for t in kept]
        assert torch.equal(a_[1], b_[1]) and torch.equal(a_[3], b_[3])  # labels, rois
        _close(a_[2], b_[2])  # boxes
        _close(a_[0], b_[0])  # scores
    _close(out_a.features, out_b.features)  # region features
    _close(out_a.boxes, out_b.boxes)
    return det_a, det_b


@needs_d2
def test_fpn_backends_agree(fpn_pair):
    _assert_equivalent(fpn_pair, batch=2)


@needs_d2
def test_butd_c4_head_backends_agree(c4_pair):
    det_a, det_b = _assert_equivalent(c4_pair)
    _close(det_a.attr_logits, det_b.attr_logits)
    ours, d2 = c4_pair
    assert d2.model.roi_heads.res5[0].conv2.dilation == (2, 2)
    with torch.no_grad():
        assert d2.model.backbone.stem(torch.zeros(1, 3, 66, 98)).shape[-2:] == (16, 24)  # caffe's pool1
    for m in (ours, d2):
        assert m.workload()["res5_dilation"] == 2


@needs_d2
def test_roi_pool_c4_backends_agree():
    _assert_equivalent(_pair("butd-r101-c4", **{**C4, "roi_pooler": "pool"}))


@needs_d2
def test_detectron2_runs_every_stage_and_pins_k():
    model = VISUAL.build("frcnn-r50-fpn", backend="detectron2", **FPN)
    assert model.bn_calibrated  # detectron2's FrozenBatchNorm2d calibrated like ours
    rec = StageRecorder()
    with torch.no_grad():
        out = model(**model.make_inputs(2, generator=torch.Generator().manual_seed(0), device="cpu"), stage=rec)
    assert (
        rec.names
        == stage_names(model)
        == [
            "preprocess",
            "backbone",
            "rpn.head",
            "rpn.decode",
            "rpn.nms",
            "roi_align",
            "roi_head",
            "box_predictor",
            "det.nms",
            "select",
        ]
    )
    assert out.mask.all() and out.features.shape == (2, 8, 128) and out.extras["regions"] == [8, 8]
    assert model.workload()["backend"] == "detectron2" and model.workload()["nms_mode"] == "batched"


@needs_d2
def test_stride_in_1x1_mismatch_loads_silently_but_computes_another_res4(c4_pair):
    """The trap: the same weights with STRIDE_IN_1X1 flipped load without error, and res4 is far off."""
    ours, _ = c4_pair
    flipped = VISUAL.build("butd-r101-c4", backend="detectron2", calibrate_bn=False, **{**C4, "stride_in_1x1": False})
    flipped.load_torchvision_backend_state(ours.state_dict())  # no error
    _, right = c4_pair
    x = ours.make_inputs(1, generator=torch.Generator().manual_seed(1), device="cpu")["pixel_values"]
    with torch.no_grad():
        good = right.model.backbone(right._preprocess(x).tensor)["res4"]
        bad = flipped.model.backbone(flipped._preprocess(x).tensor)["res4"]
        mine = ours.backbone(ours.transform(x))["res4"]
    _close(mine, good)
    assert ((bad - good).norm() / good.norm()) > 0.5


@needs_d2
def test_anchor_order_and_rounding_differ_as_named(c4_pair):
    ours, d2 = c4_pair
    d2_cells = list(d2.model.proposal_generator.anchor_generator.cell_anchors)[0]  # size-major, unrounded
    perm = anchor_permutation(*ours.anchor_layout())
    _close(ours.rpn.anchor_generator.cell_anchors[0], d2_cells[perm])
    assert not torch.equal(d2_cells, d2_cells.round())
    rounded = VISUAL.build("butd-r101-c4", **{**C4, "anchor_rounding": True, "calibrate_bn": False})
    assert torch.equal(rounded.rpn.anchor_generator.cell_anchors[0], d2_cells[perm].round())


@needs_d2
def test_background_class_is_last_in_detectron2(c4_pair):
    ours, d2 = c4_pair
    w_d2 = d2.model.roi_heads.box_predictor.cls_score.weight
    w_ours = ours.box_predictor.cls_score.weight
    torch.testing.assert_close(w_d2[-1], w_ours[0])
    torch.testing.assert_close(w_d2[:-1], w_ours[1:])
    assert d2.model.roi_heads.box_predictor.bbox_pred.weight.shape[0] == 4 * 20  # no background box


def _import_failing(exc):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name.split(".")[0] == "detectron2":
            raise exc
        return real(name, *args, **kwargs)

    return fake


def test_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(
        detectron2_backend.importlib,
        "import_module",
        _import_failing(ModuleNotFoundError("No module named 'detectron2'", name="detectron2")),
    )
    with pytest.raises(VlpbenchError, match=r"detectron2 is not installed; make install-detectron2"):
        VISUAL.build("butd-r101-c4", tiny=True, backend="detectron2")


@pytest.mark.parametrize(
    "exc, pattern",
    [
        (ModuleNotFoundError("No module named 'fvcore'", name="fvcore"), r"installed but broken: it needs 'fvcore'"),
        (
            ImportError("detectron2/_C.so: undefined symbol: _ZN3c10"),
            r"installed but broken \(ImportError: .*undefined",
        ),
    ],
)
def test_installed_but_broken_is_a_clear_error(monkeypatch, exc, pattern):
    monkeypatch.setattr(detectron2_backend.importlib, "import_module", _import_failing(exc))
    with pytest.raises(VlpbenchError, match=pattern):
        VISUAL.build("frcnn-r50-fpn", tiny=True, backend="detectron2")
