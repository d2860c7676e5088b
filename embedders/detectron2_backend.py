"""The region embedder's ``detectron2`` backend: detectron2's own Faster R-CNN, run as our named stages.

The model is built by detectron2 from its config system (``get_cfg()`` + ``build_model``; the model zoo is
not used: it needs ``pkg_resources``, which current setuptools no longer ships).  Its pieces run under the
torchvision backend's stage names, so records compare stage by stage:

    preprocess      GeneralizedRCNN.preprocess_image (normalise, pad to the backbone's size divisibility)
    backbone        model.backbone
    rpn.head        StandardRPNHead
    rpn.decode      anchors + RPN._decode_proposals (every anchor decoded)
    rpn.nms         find_top_rpn_proposals (pre-NMS top-k per level, clip, NMS per level, post-NMS top-k);
                    the torchvision backend counts the top-k and clipping under rpn.decode instead
    roi_align       ROIPooler (ROIAlignV2 for C4, ROIAlign for FPN as torchvision's MultiScaleRoIAlign,
                    ROIPool when asked)
    roi_head        res5 + mean (C4) or FastRCNNConvFCHead (FPN)
    box_predictor   FastRCNNOutputLayers (+ bottom-up-attention's attribute head, our module)
    det.nms         FastRCNNOutputLayers.inference (score filter, then batched NMS per class)
    select          the same region selection as the torchvision backend (fill to K)

Where detectron2 cannot express bottom-up-attention's network, detectron2's own building blocks are swapped in:
res5 at stride 1 with dilation 2 (detectron2's Res5ROIHeads always strides its first block) and caffe's pool1
(detectron2's BasicStem pads its max pool).  detectron2's detection NMS always pre-filters by score, so the
backend's workload records ``nms_mode`` "batched" whatever the config asks for.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlpbench.embedders.rcnn_heads import Detections
from vlpbench.embedders.rcnn_options import AttributeHead
from vlpbench.embedders.region import RegionEmbedder, RegionEmbedderConfig, finish_weights, workload_facts
from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.stages import StageFn, null_stage

INSTALL_HINT = "make install-detectron2 (README: 'The detectron2 backend')"


def import_detectron2() -> Any:
    """``import detectron2`` with its modeling package, or one clear VlpbenchError saying why not."""
    try:
        d2 = importlib.import_module("detectron2")
        importlib.import_module("detectron2.modeling")
        importlib.import_module("detectron2.config")
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "detectron2":
            raise VlpbenchError(
                f"backend 'detectron2' requested but detectron2 is not installed; {INSTALL_HINT}, "
                "or use backend 'torchvision'"
            ) from e
        raise VlpbenchError(
            f"detectron2 is installed but broken: it needs {e.name!r}, which is missing; reinstall with {INSTALL_HINT}"
        ) from e
    except Exception as e:  # a wheel built for another torch fails with ImportError / OSError / RuntimeError
        raise VlpbenchError(
            f"detectron2 is installed but broken ({type(e).__name__}: {e}); reinstall with {INSTALL_HINT}"
        ) from e
    return d2


def detectron2_config(cfg: RegionEmbedderConfig) -> Any:
    """Our config -> detectron2's CfgNode for the same network (a GeneralizedRCNN)."""
    from detectron2.config import get_cfg

    c = get_cfg()
    c.MODEL.DEVICE = "cpu"
    c.MODEL.WEIGHTS = ""
    c.MODEL.PIXEL_MEAN = list(cfg.pixel_mean)
    c.MODEL.PIXEL_STD = list(cfg.pixel_std)
    c.MODEL.RESNETS.DEPTH = cfg.depth
    c.MODEL.RESNETS.NORM = "FrozenBN"
    c.MODEL.RESNETS.STRIDE_IN_1X1 = cfg.stride_in_1x1
    c.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if cfg.depth < 50 else 256
    c.MODEL.BACKBONE.FREEZE_AT = 0
    c.MODEL.ANCHOR_GENERATOR.SIZES = [list(s) for s in cfg.anchor_sizes]
    c.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(cfg.aspect_ratios)]
    c.MODEL.RPN.PRE_NMS_TOPK_TEST = cfg.rpn_pre_nms_top_n
    c.MODEL.RPN.POST_NMS_TOPK_TEST = cfg.rpn_post_nms_top_n
    c.MODEL.RPN.NMS_THRESH = cfg.rpn_nms_thresh
    c.MODEL.RPN.CONV_DIMS = [cfg.rpn_conv_channels or -1]
    c.MODEL.ROI_HEADS.NUM_CLASSES = cfg.num_classes - 1  # detectron2 counts foreground classes
    c.MODEL.ROI_HEADS.SCORE_THRESH_TEST = cfg.score_thresh
    c.MODEL.ROI_HEADS.NMS_THRESH_TEST = cfg.det_nms_thresh
    c.TEST.DETECTIONS_PER_IMAGE = cfg.detections_per_img
    c.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = cfg.pooler_resolution
    c.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = cfg.pooler_sampling_ratio
    if cfg.arch == "fpn":
        c.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        c.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        c.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        c.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        c.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        c.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        c.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
        c.MODEL.ROI_BOX_HEAD.NUM_FC = 2
        c.MODEL.ROI_BOX_HEAD.FC_DIM = cfg.representation_size
        c.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlign"  # aligned=False, as torchvision's MultiScaleRoIAlign
    else:
        c.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        c.MODEL.RESNETS.OUT_FEATURES = ["res4"]
        c.MODEL.RPN.IN_FEATURES = ["res4"]
        c.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
        c.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        c.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIPool" if cfg.roi_pooler == "pool" else "ROIAlignV2"
    c.freeze()
    return c


def _dilated_res5(d2cfg: Any, dilation: int) -> nn.Module:
    """bottom-up-attention's res5: every block at stride 1, every 3x3 dilated (detectron2's blocks)."""
    from detectron2.modeling.backbone.resnet import BottleneckBlock, ResNet

    r = d2cfg.MODEL.RESNETS
    out_channels = r.RES2_OUT_CHANNELS * 8
    blocks = ResNet.make_stage(
        BottleneckBlock,
        3,
        stride_per_block=[1, 1, 1],
        in_channels=out_channels // 2,
        bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * 8,
        out_channels=out_channels,
        num_groups=r.NUM_GROUPS,
        norm=r.NORM,
        stride_in_1x1=r.STRIDE_IN_1X1,
        dilation=dilation,
    )
    return nn.Sequential(*blocks)


def _caffe_pool_stem(stem: nn.Module) -> nn.Module:
    """detectron2's BasicStem with caffe's pool1 (ceil mode, no padding), same conv1 and its weights."""
    from detectron2.modeling.backbone.resnet import BasicStem

    class CaffePoolStem(BasicStem):
        def forward(self, x: Tensor) -> Tensor:
            x = F.relu_(self.conv1(x))
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)

    new = CaffePoolStem(in_channels=stem.conv1.in_channels, out_channels=stem.out_channels, norm="FrozenBN")
    new.load_state_dict(stem.state_dict())
    return new


def build_detectron2_model(cfg: RegionEmbedderConfig) -> nn.Module:
    """detectron2's GeneralizedRCNN for ``cfg``, in eval mode, random weights."""
    from detectron2.modeling import build_model

    d2cfg = detectron2_config(cfg)
    model = build_model(d2cfg)
    if cfg.arch == "c4" and cfg.res5_dilation != 1:
        model.roi_heads.res5 = _dilated_res5(d2cfg, cfg.res5_dilation)
    if cfg.pool1 == "caffe":
        trunk = model.backbone.bottom_up if cfg.arch == "fpn" else model.backbone
        trunk.stem = _caffe_pool_stem(trunk.stem)
    return model.eval()


class Detectron2RegionEmbedder(RegionEmbedder):
    """The region embedder's interface and stages over detectron2's GeneralizedRCNN (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        arch: str,
        image_size: tuple[int, int],
        input_scale: float,
        bgr: bool,
        feature_dim: int,
        num_regions: int,
        fill_to_k: bool,
        region_boxes: str,
        out_dim: int | None,
        attribute_head: AttributeHead | None,
        anchors: tuple[int, int],
        workload_facts: dict[str, Any] | None = None,
    ):
        nn.Module.__init__(self)
        self.model = model
        self.attribute_head = attribute_head
        self.arch = arch
        self.input_scale = float(input_scale)
        self.bgr = bool(bgr)
        self._anchors = anchors
        self._init_output(
            feature_dim=feature_dim,
            num_regions=num_regions,
            fill_to_k=fill_to_k,
            region_boxes=region_boxes,
            out_dim=out_dim,
            image_size=image_size,
            workload_facts=workload_facts,
        )

    def anchor_layout(self) -> tuple[int, int]:
        return self._anchors

    def frozen_bn_types(self) -> tuple[type, ...]:
        from detectron2.layers import FrozenBatchNorm2d

        return (FrozenBatchNorm2d,)

    def load_torchvision_backend_state(self, state: dict[str, Tensor]) -> None:
        """Load the torchvision backend's state dict (same config) into detectron2's model, strictly."""
        from vlpbench.embedders.region_checkpoints import to_detectron2_names

        d2_state = to_detectron2_names(state, arch=self.arch, anchors=self._anchors)
        ours = "roi_heads.attribute_predictor."  # our module on top of detectron2's model, loaded below
        self.model.load_state_dict({k: v for k, v in d2_state.items() if not k.startswith(ours)}, strict=True)
        for sub in ("attribute_head", "proj"):
            part = {k[len(sub) + 1 :]: v for k, v in state.items() if k.startswith(sub + ".")}
            if part:
                getattr(self, sub).load_state_dict(part)
        self.bn_calibrated = False

    # ---- the stages --------------------------------------------------------------------------------------
    def _preprocess(self, pixel_values: Tensor) -> Any:
        """[B, 3, h, w] in [0, 1] -> detectron2 ImageList (scaled, channel order, resized, normalised, padded)."""
        x = pixel_values * self.input_scale if self.input_scale != 1.0 else pixel_values
        if self.bgr:
            x = x.flip(1)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return self.model.preprocess_image([{"image": img} for img in x])

    def _rpn_decode(self, rpn: nn.Module, feats: list[Tensor], logits: list[Tensor], deltas: list[Tensor]):
        anchors = rpn.anchor_generator(feats)
        logits = [s.permute(0, 2, 3, 1).flatten(1) for s in logits]  # (B, A, Hi, Wi) -> (B, Hi*Wi*A)
        box_dim = rpn.anchor_generator.box_dim
        # (B, A*4, Hi, Wi) -> (B, Hi*Wi*A, 4)
        deltas = [
            x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for x in deltas
        ]
        return rpn._decode_proposals(anchors, deltas), logits

    def run_detector(self, pixel_values: Tensor, stage: StageFn = null_stage):
        """Every stage up to and including detection NMS -> (features [N, D], proposals, Detections, facts)."""
        from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals

        self._check_pixels(pixel_values)
        m, rpn, roi = self.model, self.model.proposal_generator, self.model.roi_heads
        with stage("preprocess"):
            images = self._preprocess(pixel_values)
        with stage("backbone"):
            features = m.backbone(images.tensor)  # {name: [B, C, h, w]}
        feats = [features[f] for f in rpn.in_features]
        with stage("rpn.head"):
            logits, deltas = rpn.rpn_head(feats)
        with stage("rpn.decode"):
            pred, logits = self._rpn_decode(rpn, feats, logits, deltas)
        with stage("rpn.nms"):
            props = find_top_rpn_proposals(
                pred,
                logits,
                images.image_sizes,
                rpn.nms_thresh,
                rpn.pre_nms_topk[False],
                rpn.post_nms_topk[False],
                rpn.min_box_size,
                False,
            )
        boxes = [p.proposal_boxes for p in props]
        with stage("roi_align"):
            pooler = roi.pooler if self.arch == "c4" else roi.box_pooler
            pooled = pooler([features[f] for f in roi.in_features], boxes)  # [N, C, S, S]
        with stage("roi_head"):
            roi_features = roi.res5(pooled).mean(dim=(2, 3)) if self.arch == "c4" else roi.box_head(pooled)
        with stage("box_predictor"):
            predictions = roi.box_predictor(roi_features)  # [N, K+1] (background last), [N, 4K]
            attr_logits = (
                self.attribute_head(roi_features, _background_first(predictions[0]))
                if self.attribute_head is not None
                else None
            )
        with stage("det.nms"):
            instances, kept = roi.box_predictor.inference(predictions, props)
        detections = self._detections(roi.box_predictor, predictions, props, instances, kept)
        detections.attr_logits = attr_logits
        facts = {
            "rpn_pre_nms": [sum(min(rpn.pre_nms_topk[False], lv.shape[1]) for lv in logits)] * len(props),
            "rpn_post_nms": [len(p) for p in props],
            "det_candidates": detections.candidates,
            "det_kept": [len(i) for i in instances],
        }
        return roi_features, [b.tensor for b in boxes], detections, facts

    def _detections(self, predictor: nn.Module, predictions, props, instances, kept) -> Detections:
        """detectron2's outputs -> our Detections (background first, global RoI indices)."""
        scores = _background_first(torch.cat(predictor.predict_probs(predictions, props)))  # [N, C]
        fg_boxes = torch.cat(predictor.predict_boxes(predictions, props))  # [N, 4K]
        n = fg_boxes.shape[0]
        fg_boxes = fg_boxes.view(n, -1, 4)
        h, w = self.image_size
        fg_boxes = torch.stack(
            [
                fg_boxes[..., 0].clamp(0, w),
                fg_boxes[..., 1].clamp(0, h),
                fg_boxes[..., 2].clamp(0, w),
                fg_boxes[..., 3].clamp(0, h),
            ],
            dim=-1,
        )
        proposals = torch.cat([p.proposal_boxes.tensor for p in props])
        pred_boxes = torch.cat([proposals[:, None], fg_boxes], dim=1)  # [N, C, 4]; column 0 is never read
        starts = torch.tensor([0] + [len(p) for p in props]).cumsum(0)[:-1].tolist()
        thresh = predictor.test_score_thresh
        return Detections(
            boxes=[i.pred_boxes.tensor for i in instances],
            scores=[i.scores for i in instances],
            labels=[i.pred_classes + 1 for i in instances],
            rois=[k + s for k, s in zip(kept, starts)],
            candidates=[int((sc[:, 1:] > thresh).sum()) for sc in scores.split([len(p) for p in props])],
            pred_boxes=pred_boxes,
            class_scores=scores,
        )


def _background_first(scores: Tensor) -> Tensor:
    """[N, K+1] with background last (detectron2) -> background first (torchvision, caffe)."""
    return torch.cat([scores[:, -1:], scores[:, :-1]], dim=1)


def build_detectron2_region_embedder(cfg: RegionEmbedderConfig) -> Detectron2RegionEmbedder:
    """Registry builder for ``backend="detectron2"``: detectron2's model, our stages and workload."""
    import_detectron2()
    if cfg.arch == "c4" and cfg.depth < 50:
        raise bad_value(
            "depth",
            cfg.depth,
            "50, 101 or 152 for arch 'c4' with backend 'detectron2' (its res5 RoI head is made of bottleneck blocks)",
        )
    model = build_detectron2_model(cfg)
    feature_dim = cfg.representation_size if cfg.arch == "fpn" else model.roi_heads.res5[-1].out_channels
    attributes = AttributeHead(feature_dim, cfg.num_classes, cfg.attribute_classes) if cfg.attribute_classes else None
    facts = {**workload_facts(cfg), "nms_mode": "batched", "nms_prefilter": True}
    emb = Detectron2RegionEmbedder(
        model,
        arch=cfg.arch,
        image_size=tuple(cfg.image_size),
        input_scale=cfg.input_scale,
        bgr=cfg.bgr,
        feature_dim=feature_dim,
        num_regions=cfg.num_regions,
        fill_to_k=cfg.fill_to_k,
        region_boxes=cfg.region_boxes,
        out_dim=cfg.out_dim,
        attribute_head=attributes,
        anchors=(len(cfg.anchor_sizes[0]), len(cfg.aspect_ratios)),
        workload_facts=facts,
    ).eval()
    if cfg.weights is not None:
        raise VlpbenchError(
            "weights with backend 'detectron2' are not supported; load them into the torchvision "
            "backend (weights=...), or use detectron2's DetectionCheckpointer on emb.model"
        )
    finish_weights(emb, cfg)
    return emb
