"""Region-feature embedder (Faster R-CNN as named stages): shapes, stages, pinned workload, NMS modes,
errors, and equivalence with torchvision's fasterrcnn_resnet50_fpn on copied weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, box_iou

import vlpbench.presets.region  # noqa: F401  (registers the presets)
from doubles import StageRecorder
from vlpbench.embedders.rcnn_heads import Detections, select_regions
from vlpbench.embedders.region import RegionEmbedder, calibrate_frozen_bn, load_torchvision_weights
from vlpbench.errors import VlpbenchError
from vlpbench.registry import VISUAL
from vlpbench.stages import stage_names
from vlpbench.types import VisualTokens

PRESETS = ("frcnn-r50-fpn", "butd-r101-c4")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine, 2 spinning OpenMP threads run 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(model, batch=1, seed=0):
    return model.make_inputs(batch, generator=torch.Generator().manual_seed(seed), device="cpu")


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {name: VISUAL.build(name, tiny=True) for name in PRESETS}


@pytest.mark.parametrize("name", PRESETS)
def test_tiny_shapes_spec_stages_and_extras(tiny_models, name):
    model = tiny_models[name]
    cfg = VISUAL.config(name, tiny=True)
    rec = StageRecorder()
    with torch.no_grad():
        out = model(**_inputs(model, batch=2), stage=rec)
    spec = model.output_spec()
    k = cfg.num_regions
    assert isinstance(out, VisualTokens)
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
    assert spec.has_boxes and spec.num_tokens == k
    assert spec.dim == (512 if name.startswith("butd") else cfg.representation_size)
    assert out.features.shape == (2, k, spec.dim)
    assert out.mask.shape == (2, k) and out.mask.dtype == torch.bool and out.mask.all()  # always K regions
    assert out.boxes.shape == (2, k, 4)
    assert (out.boxes >= 0).all() and (out.boxes <= 1).all()
    assert (out.boxes[..., 2] >= out.boxes[..., 0]).all() and (out.boxes[..., 3] >= out.boxes[..., 1]).all()
    ex = out.extras
    assert ex["bn_calibrated"] is True and model.workload()["bn_calibrated"] is True
    assert ex["regions"] == [k, k]
    assert all(0 < post <= min(pre, cfg.rpn_post_nms_top_n) for pre, post in zip(ex["rpn_pre_nms"], ex["rpn_post_nms"]))
    assert all(0 <= kept <= cfg.detections_per_img for kept in ex["det_kept"])
    assert all(0 <= d <= kept for d, kept in zip(ex["regions_detected"], ex["det_kept"]))
    if cfg.nms_mode == "per-class":  # bottom-up-attention runs NMS over every RoI for every class
        assert ex["det_candidates"] == [post * (cfg.num_classes - 1) for post in ex["rpn_post_nms"]]
    assert model.workload()["image_size"] == list(cfg.image_size)
    assert model.workload()["regions"] == k


def test_out_dim_adds_project_stage():
    model = VISUAL.build("butd-r101-c4", tiny=True, out_dim=24, calibrate_bn=False)
    rec = StageRecorder()
    with torch.no_grad():
        out = model(**_inputs(model), stage=rec)
    assert rec.names == stage_names(model) and rec.names[-1] == "project"
    assert model.output_spec().dim == 24 and out.features.shape[-1] == 24
    assert out.extras["bn_calibrated"] is False


def test_region_features_are_rows_of_the_roi_head(tiny_models):
    """The features of each region are the box-head output of the RoI its box came from."""
    model = tiny_models["butd-r101-c4"]
    x = _inputs(model, seed=3)["pixel_values"]
    with torch.no_grad():
        feats, proposals, _, _ = model.run_detector(x)
        out = model(x)
    h, w = model.image_size
    boxes = out.boxes[0] * torch.tensor([w, h, w, h])  # proposal boxes (region_boxes="proposal")
    rows = box_iou(boxes, proposals[0]).argmax(1)
    torch.testing.assert_close(out.features[0], feats[rows])


@pytest.mark.parametrize("mode", ["per-class", "batched", "class-agnostic"])
def test_nms_modes_run_and_fill(tiny_models, mode):
    base = tiny_models["frcnn-r50-fpn"]
    model = VISUAL.build("frcnn-r50-fpn", tiny=True, nms_mode=mode, score_thresh=0.0, calibrate_bn=False)
    model.load_state_dict(base.state_dict())
    x = _inputs(model, batch=2, seed=1)
    with torch.no_grad():
        out = model(**x)
        adaptive = VISUAL.build(
            "frcnn-r50-fpn",
            tiny=True,
            nms_mode=mode,
            score_thresh=0.0,
            fill_to_k=False,
            num_regions=50,
            calibrate_bn=False,
        )
        adaptive.load_state_dict(base.state_dict())
        out_adaptive = adaptive(**x)
    assert out.mask.all() and out.features.shape[:2] == (2, model.num_regions)
    assert min(out.extras["det_kept"]) > 0 and min(out.extras["regions_detected"]) > 0
    # without filling, exactly the RoIs with a surviving detection are real
    assert out_adaptive.mask.sum(1).tolist() == out_adaptive.extras["regions_detected"]
    dets = model.detect(x["pixel_values"])
    for det in dets:
        assert det["scores"].numel() <= model.postprocess.detections_per_img
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        if mode == "class-agnostic":  # no two kept boxes overlap beyond the threshold, whatever their class
            iou = box_iou(det["boxes"], det["boxes"]).fill_diagonal_(0)
            assert (iou <= model.postprocess.nms_thresh + 1e-6).all()


def test_per_class_loop_keeps_the_same_detections_as_batched_nms(tiny_models):
    base = tiny_models["frcnn-r50-fpn"]
    x = _inputs(base, seed=2)["pixel_values"]
    kept = {}
    for mode in ("per-class", "batched"):
        # a small-box filter is torchvision's only extra step; boxes here are far above 1e-2 px
        model = VISUAL.build(
            "frcnn-r50-fpn", tiny=True, nms_mode=mode, score_thresh=0.0, detections_per_img=10**6, calibrate_bn=False
        )
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            det = model.run_detector(x)[2]
        kept[mode] = sorted(zip(det.rois[0].tolist(), det.labels[0].tolist()))
    assert len(kept["batched"]) > 0
    assert kept["per-class"] == kept["batched"]


def test_select_pads_images_with_fewer_proposals_than_k():
    """Image 0 has 3 RoIs (one detected), image 1 none: K=4 rows each, unfilled rows zero and masked."""
    feats = torch.arange(3 * 2, dtype=torch.float32).view(3, 2) + 1  # [N=3, D=2]
    proposals = [torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [30, 0, 40, 10]]), torch.zeros(0, 4)]
    class_scores = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.1, 0.7], [0.1, 0.6, 0.3]])  # [N, C=3]
    det = Detections(
        boxes=[proposals[0][1:2], torch.zeros(0, 4)],
        scores=[torch.tensor([0.7]), torch.zeros(0)],
        labels=[torch.tensor([2]), torch.zeros(0, dtype=torch.long)],
        rois=[torch.tensor([1]), torch.zeros(0, dtype=torch.long)],
        candidates=[6, 0],
        pred_boxes=proposals[0][:, None].expand(3, 3, 4),
        class_scores=class_scores,
    )
    out = select_regions(feats, proposals, det, k=4, fill_to_k=True, region_boxes="proposal", image_size=(40, 40))
    assert out.mask.tolist() == [[True, True, True, False], [False] * 4]
    assert out.detected == [1, 0]
    # detected RoI 1 first, then fillers by best foreground score: RoI 2 (0.6), RoI 0 (0.3)
    torch.testing.assert_close(out.features[0, :3], feats[[1, 2, 0]])
    assert out.features[0, 3].abs().sum() == 0 and out.features[1].abs().sum() == 0
    torch.testing.assert_close(out.boxes[0, 0], torch.tensor([5.0, 5, 20, 20]) / 40)
    adaptive = select_regions(feats, proposals, det, k=4, fill_to_k=False, region_boxes="proposal", image_size=(40, 40))
    assert adaptive.mask.tolist() == [[True, False, False, False], [False] * 4]


def test_resizes_inputs_of_another_size(tiny_models):
    model = tiny_models["frcnn-r50-fpn"]
    x = torch.rand(1, 3, 100, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.features.shape[:2] == (1, model.num_regions) and out.mask.all()


def _frozen_copy_of_bn(module: nn.Module) -> None:
    """Swap eval BatchNorm2d for FrozenBatchNorm2d with the same statistics (what torchvision uses when trained)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for buf in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, buf).copy_(getattr(child, buf).detach())
            setattr(module, name, frozen)
        else:
            _frozen_copy_of_bn(child)


def test_matches_torchvision_fasterrcnn_resnet50_fpn(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    h, w = 320, 480
    torch.manual_seed(0)
    ref = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=h, max_size=w, rpn_post_nms_top_n_test=300, box_score_thresh=0.012
    ).eval()
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))
    assert calibrate_frozen_bn(ref, [image]) == 53  # random-init BN: calibrate so the RPN finds boxes
    path = tmp_path / "frcnn.pt"
    torch.save(ref.state_dict(), path)  # nn.BatchNorm2d keys incl. num_batches_tracked
    ours = VISUAL.build(
        "frcnn-r50-fpn", image_size=(h, w), rpn_post_nms_top_n=300, score_thresh=0.012, weights=str(path)
    )
    assert ours.bn_calibrated is False and ours.workload()["bn_calibrated"] is False
    _frozen_copy_of_bn(ref)  # same arithmetic as ours, so the comparison is exact, not near-ties
    with torch.no_grad():
        expected = ref([image])[0]
        got = ours.detect(image[None])[0]
    assert expected["scores"].numel() > 0
    assert torch.equal(got["labels"], expected["labels"])
    torch.testing.assert_close(got["boxes"], expected["boxes"])
    torch.testing.assert_close(got["scores"], expected["scores"])


def test_state_dict_round_trip_via_file(tiny_models, tmp_path):
    model = tiny_models["butd-r101-c4"]
    path = tmp_path / "butd_tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = VISUAL.build("butd-r101-c4", tiny=True, weights=str(path))
    x = _inputs(model, seed=5)
    with torch.no_grad():
        a, b = model(**x), loaded(**x)
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.boxes, b.boxes)
    assert b.extras["bn_calibrated"] is False


def test_state_dict_that_does_not_fit_names_the_keys(tiny_models, tmp_path):
    fpn_state = tiny_models["frcnn-r50-fpn"].state_dict()
    c4 = VISUAL.build("butd-r101-c4", tiny=True, calibrate_bn=False)
    with pytest.raises(
        VlpbenchError, match=r"missing keys: .*box_head\.res5\..*unexpected keys: backbone\.body\.layer4\."
    ):
        load_torchvision_weights(c4, fpn_state)
    other = VISUAL.build("frcnn-r50-fpn", tiny=True, num_classes=5, calibrate_bn=False)
    with pytest.raises(VlpbenchError, match=r"shape mismatches: box_predictor\.bbox_pred\.bias \(364,\) vs \(20,\)"):
        load_torchvision_weights(other, fpn_state)
    with pytest.raises(VlpbenchError, match="nope.pt"):
        VISUAL.build("frcnn-r50-fpn", tiny=True, weights=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    torch.save([1, 2, 3], bad)
    with pytest.raises(VlpbenchError, match="not a state dict"):
        load_torchvision_weights(other, bad)


def test_calibration_sets_bn_stats_from_inputs():
    model = VISUAL.build("frcnn-r50-fpn", tiny=True, calibrate_bn=False)
    bn = model.backbone.body.bn1
    seen = []
    handle = model.backbone.body.conv1.register_forward_hook(lambda m, a, out: seen.append(out))
    x = _inputs(model)["pixel_values"]
    n = model.calibrate(x)
    handle.remove()
    assert n == sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) > 0
    torch.testing.assert_close(bn.running_mean, seen[0].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, seen[0].var(dim=(0, 2, 3), unbiased=False))
    assert model.bn_calibrated and model.workload()["bn_calibrated"]


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"nms_mode": "soft"}, r"nms_mode 'soft'.*per-class, batched, class-agnostic"),
        ({"num_regions": 0}, r"num_regions 0.*1\.\.rpn_post_nms_top_n \(50\)"),
        ({"num_regions": 51}, r"num_regions 51.*1\.\.rpn_post_nms_top_n \(50\)"),
        ({"image_size": (48, 192)}, r"image_size \(48, 192\).*>= 64"),
        ({"arch": "c5"}, r"arch 'c5'.*c4, fpn"),
        ({"depth": 42}, r"depth 42"),
        ({"region_boxes": "grid"}, r"region_boxes 'grid'"),
    ],
)
def test_bad_config_raises(overrides, pattern):
    with pytest.raises(VlpbenchError, match=pattern):
        VISUAL.build("frcnn-r50-fpn", tiny=True, **overrides)


def test_c4_minimum_image_side_is_named():
    with pytest.raises(VlpbenchError, match=r"image_size \(8, 192\).*>= 16 for arch 'c4'"):
        VISUAL.build("butd-r101-c4", tiny=True, image_size=(8, 192))


@pytest.mark.parametrize(
    "pixels, pattern",
    [
        (torch.rand(3, 128, 192), r"pixel_values shape \(3, 128, 192\)"),
        (torch.rand(1, 1, 128, 192), r"pixel_values shape \(1, 1, 128, 192\)"),
        (torch.zeros(1, 3, 128, 192, dtype=torch.uint8), r"pixel_values dtype torch.uint8"),
    ],
)
def test_bad_pixel_values_raise(tiny_models, pixels, pattern):
    with pytest.raises(VlpbenchError, match=pattern):
        tiny_models["frcnn-r50-fpn"](pixels)


def test_presets_hold_reference_numbers():
    butd = VISUAL.config("butd-r101-c4")
    assert (butd.arch, butd.depth, butd.image_size, butd.num_classes) == ("c4", 101, (800, 1333), 1601)
    assert (butd.rpn_pre_nms_top_n, butd.rpn_post_nms_top_n, butd.rpn_nms_thresh) == (6000, 300, 0.7)
    assert (butd.pooler_resolution, butd.nms_mode, butd.det_nms_thresh, butd.score_thresh) == (
        14,
        "per-class",
        0.3,
        0.2,
    )
    assert butd.num_regions == 36 and VISUAL.config("butd-r101-c4-600").image_size == (600, 1000)
    frcnn = VISUAL.config("frcnn-r50-fpn")
    assert (frcnn.arch, frcnn.depth, frcnn.num_classes, frcnn.rpn_post_nms_top_n) == ("fpn", 50, 91, 1000)
    assert (frcnn.nms_mode, frcnn.det_nms_thresh, frcnn.score_thresh, frcnn.detections_per_img) == (
        "batched",
        0.5,
        0.05,
        100,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name, dim", [("butd-r101-c4", 2048), ("frcnn-r50-fpn", 1024)])
def test_full_size_finds_proposals_after_calibration(name, dim):
    torch.manual_seed(0)
    model = VISUAL.build(name)
    assert isinstance(model, RegionEmbedder) and model.bn_calibrated
    with torch.no_grad():
        out = model(**_inputs(model, seed=1))
    cfg = VISUAL.config(name)
    assert out.features.shape == (1, 36, dim) and out.mask.all()
    assert out.extras["rpn_post_nms"][0] == cfg.rpn_post_nms_top_n  # non-zero: a full proposal set
    assert out.extras["rpn_pre_nms"][0] > cfg.rpn_post_nms_top_n
