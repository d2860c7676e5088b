"""bottom-up-attention's network as region-embedder options: stride placement, dilated res5, caffe pool1, RPN
width, RoIPool, attribute head, per-class NMS pre-filter, unrounded anchors; the res5 head's work against a count
from the layer shapes of bottom-up-attention's test.prototxt."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet50
from torchvision.ops import FrozenBatchNorm2d, nms, roi_pool

import vlpbench.presets.region  # noqa: F401  (registers the presets)
from vlpbench.embedders.rcnn_options import AttributeHead, SingleLevelRoIPool, UnroundedAnchorGenerator, prepare_trunk
from vlpbench.embedders.region import _build_c4
from vlpbench.errors import VlpbenchError
from vlpbench.registry import VISUAL


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# bottom-up-attention test.prototxt, res5 (after roi_pool5: 14x14, 1024 channels):
# (layer, input channels, num_output, kernel_size); every stride 1, every 3x3 with dilation 2 and pad 2.
PROTOTXT_RES5 = [
    ("res5a_branch1", 1024, 2048, 1),
    ("res5a_branch2a", 1024, 512, 1),
    ("res5a_branch2b", 512, 512, 3),
    ("res5a_branch2c", 512, 2048, 1),
] + [
    (f"res5{b}_branch2{c}", cin, cout, k)
    for b in "bc"
    for c, cin, cout, k in (("a", 2048, 512, 1), ("b", 512, 512, 3), ("c", 512, 2048, 1))
]
ROI_POOL5_SIDE = 14


def _conv_flops(cin: int, cout: int, k: int, side: int) -> int:
    return 2 * cin * cout * k * k * side * side  # 2 FLOPs per multiply-add, output side x side


def _head_flops(cfg) -> int:
    with torch.device("meta"):
        _, _, head, _ = _build_c4(cfg)
        x = torch.empty(1, 1024, cfg.pooler_resolution, cfg.pooler_resolution)
        with FlopCounterMode(display=False) as counter:
            head(x)
    return counter.get_total_flops()


def test_res5_head_does_the_published_work_per_roi():
    cfg = VISUAL.config("butd-r101-c4")
    published = sum(_conv_flops(cin, cout, k, ROI_POOL5_SIDE) for _, cin, cout, k in PROTOTXT_RES5)
    assert len(PROTOTXT_RES5) == 10
    ours = _head_flops(cfg)
    assert abs(ours - published) / published < 0.05, (ours, published)
    # torchvision's layer4 (stride 2 in the 3x3) on the same 14x14 RoI does ~3.6x less
    strided = _head_flops(dataclasses.replace(cfg, res5_dilation=1, stride_in_1x1=False))
    assert 3.4 < published / strided < 3.8


def test_dilated_res5_keeps_14x14_and_stride_in_1x1():
    trunk = prepare_trunk(resnet50(norm_layer=FrozenBatchNorm2d), stride_in_1x1=True, res5_dilation=2, pool1="caffe")
    for layer in (trunk.layer2, trunk.layer3):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)
    assert all(b.conv2.dilation == (2, 2) and b.conv2.padding == (2, 2) for b in trunk.layer4)
    assert all(m.stride == (1, 1) for m in trunk.layer4.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        assert trunk.layer4(torch.rand(2, 1024, 14, 14)).shape == (2, 2048, 14, 14)


def test_caffe_pool1_rounds_up_without_padding():
    """conv1 of an 800x1333 image is 400x667: caffe's pool1 gives 200x333, torchvision's 200x334."""
    x = torch.rand(1, 2, 400, 667)
    caffe = prepare_trunk(resnet50(), stride_in_1x1=False, res5_dilation=1, pool1="caffe").maxpool
    assert caffe(x).shape[-2:] == (200, 333) and resnet50().maxpool(x).shape[-2:] == (200, 334)
    y = torch.rand(1, 1, 5, 6)
    expected = torch.stack([torch.stack([y[0, 0, r : r + 3, c : c + 3].max() for c in (0, 2, 4)]) for r in (0, 2)])
    torch.testing.assert_close(caffe(y)[0, 0], expected)  # windows at 0, 2, 4 (the last one cut at the border)


def test_preset_builds_the_published_parts():
    model = VISUAL.build("butd-r101-c4", tiny=True, calibrate_bn=False)
    cfg = VISUAL.config("butd-r101-c4")
    assert (cfg.stride_in_1x1, cfg.res5_dilation, cfg.pool1, cfg.rpn_conv_channels) == (True, 2, "caffe", 512)
    assert (cfg.roi_pooler, cfg.attribute_classes, cfg.det_nms_boxes, cfg.nms_prefilter) == (
        "pool",
        401,
        "proposal",
        False,
    )
    assert "measured" not in " ".join(VISUAL.get("butd-r101-c4").paper)
    assert "measured" not in " ".join(VISUAL.get("frcnn-r50-fpn").paper)
    assert isinstance(model.roi_pooler, SingleLevelRoIPool)
    assert model.rpn.head.conv[0][0].out_channels == 64  # tiny: rpn_conv_channels=64
    assert "rpn.head.conv.0.0.weight" in model.state_dict()  # torchvision's RPNHead names
    assert model.backbone.body.maxpool.ceil_mode and model.backbone.body.maxpool.padding == 0


def test_roi_pool_stage_is_torchvision_roi_pool():
    feats = {"res4": torch.rand(1, 4, 8, 12)}
    boxes = [torch.tensor([[0.0, 0, 64, 48], [16, 8, 100, 120]])]
    out = SingleLevelRoIPool("res4", 3, 1 / 16)(feats, boxes, [(128, 192)])
    torch.testing.assert_close(out, roi_pool(feats["res4"], boxes, 3, 1 / 16))


def test_attribute_head_follows_the_prototxt_layers():
    torch.manual_seed(0)
    head = AttributeHead(6, num_classes=5, num_attributes=4, embed_dim=3, hidden_dim=7)
    feats, logits = torch.rand(2, 6), torch.tensor([[0.1, 2.0, 0, 0, 0], [0, 0, 0, 0, 3.0]])
    emb = head.cls_embed.weight[[1, 4]]  # the argmax classes
    expected = head.attr_score(torch.relu(head.fc(torch.cat([feats, emb], 1))))
    torch.testing.assert_close(head(feats, logits), expected)
    model = VISUAL.build("butd-r101-c4", tiny=True, calibrate_bn=False)
    x = model.make_inputs(1, generator=torch.Generator().manual_seed(0), device="cpu")["pixel_values"]
    with torch.no_grad():
        _, proposals, det, _ = model.run_detector(x)
    assert det.attr_logits.shape == (proposals[0].shape[0], 11)


@pytest.fixture(scope="module")
def fpn_state():
    torch.manual_seed(0)
    return VISUAL.build("frcnn-r50-fpn", tiny=True).state_dict()


def _detector(fpn_state, **overrides):
    model = VISUAL.build(
        "frcnn-r50-fpn", tiny=True, nms_mode="per-class", calibrate_bn=False, detections_per_img=10**6, **overrides
    )
    model.load_state_dict(fpn_state)
    x = model.make_inputs(1, generator=torch.Generator().manual_seed(2), device="cpu")["pixel_values"]
    with torch.no_grad():
        return model.run_detector(x)


def test_prefilter_keeps_the_same_detections_with_fewer_candidates(fpn_state):
    plain = _detector(fpn_state, score_thresh=0.013)
    filtered = _detector(fpn_state, score_thresh=0.013, nms_prefilter=True)
    pairs = [sorted(zip(d[2].rois[0].tolist(), d[2].labels[0].tolist())) for d in (plain, filtered)]
    assert len(pairs[0]) > 0 and pairs[0] == pairs[1]
    n = plain[1][0].shape[0]
    assert plain[3]["det_candidates"] == [n * 90]  # every RoI for every class
    expected = int((plain[2].class_scores[:, 1:] > 0.013).sum())
    assert filtered[3]["det_candidates"] == [expected] and 0 < expected < n * 90


def test_per_class_nms_on_proposal_boxes(fpn_state):
    _, proposals, det, _ = _detector(fpn_state, score_thresh=0.0, det_nms_boxes="proposal")
    c = int(det.labels[0][0])
    scores = det.class_scores[:, c]
    expected = nms(proposals[0], scores, 0.5)
    got = det.rois[0][det.labels[0] == c]
    assert sorted(got.tolist()) == sorted(expected.tolist())


def test_unrounded_anchors_are_detectron2s_cell_anchors():
    sizes, ratios = (32, 64), (0.5, 1.0, 2.0)
    ours = UnroundedAnchorGenerator((sizes,), (ratios,)).cell_anchors[0]
    # detectron2's DefaultAnchorGenerator.generate_cell_anchors, size-major; ours is ratio-major
    d2 = []
    for size in sizes:
        for ratio in ratios:
            w = (size * size / ratio) ** 0.5
            h = ratio * w
            d2.append([-w / 2, -h / 2, w / 2, h / 2])
    d2 = torch.tensor(d2)
    order = [s * len(ratios) + r for r in range(len(ratios)) for s in range(len(sizes))]
    torch.testing.assert_close(ours, d2[order])
    assert ours[0, 2].item() == pytest.approx(45.2548 / 2, abs=1e-3)  # not rounded to 23


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"pool1": "keras"}, r"pool1 'keras'.*torchvision, caffe"),
        ({"roi_pooler": "pool"}, r"roi_pooler 'pool'.*needs arch 'c4'"),
        ({"res5_dilation": 2}, r"res5_dilation 2.*1 for arch 'fpn'"),
        ({"res5_dilation": 3}, r"res5_dilation 3.*1 or 2"),
        ({"stride_in_1x1": True}, r"stride_in_1x1 True.*False for depth 18"),
        ({"rpn_conv_channels": 0}, r"rpn_conv_channels 0"),
        ({"attribute_classes": -1}, r"attribute_classes -1"),
        ({"det_nms_boxes": "anchor"}, r"det_nms_boxes 'anchor'.*regressed, proposal"),
    ],
)
def test_bad_network_options_raise(overrides, pattern):
    with pytest.raises(VlpbenchError, match=pattern):
        VISUAL.build("frcnn-r50-fpn", tiny=True, **overrides)
