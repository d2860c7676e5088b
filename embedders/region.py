"""Region-feature visual embedder: a Faster R-CNN read as named stages (ViLT's class (c) visual embedder).

``RegionEmbedder(transform, backbone, rpn, roi_pooler, box_head, box_predictor, postprocess)`` reads like
torchvision's ``GeneralizedRCNN``; its ``forward`` names every intermediate and times each piece:

    preprocess -> backbone -> rpn.head -> rpn.decode -> rpn.nms -> roi_align -> roi_head -> box_predictor
    -> det.nms -> select [-> project]

Two backbone layouts: ``c4`` (bottom-up-attention: ResNet res2-res4, RPN on C4, RoI pooling 14x14, res5
head, mean pool) and ``fpn`` (torchvision's fasterrcnn_resnet50_fpn).  The options of
:mod:`rcnn_options` (stride placement, res5 dilation, pool1 style, RPN width, RoIPool, attribute head)
express bottom-up-attention's caffe network.  Random weights make scores meaningless, so by default the
output is pinned to exactly ``num_regions`` regions (detections first, then filled in score order) and
``extras`` records how much work each stage really did.

Two backends build the same stages: ``torchvision`` (these modules) and ``detectron2``
(:mod:`detectron2_backend`: detectron2's own model from its config system, run under the same stage names).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from vlpbench.embedders.rcnn_heads import (
    NMS_BOXES,
    NMS_MODES,
    C4Backbone,
    DetectionPostprocess,
    ImagePreprocess,
    ProposalStages,
    Res5BoxHead,
    SingleLevelRoIAlign,
    select_regions,
)
from vlpbench.embedders.rcnn_options import (
    POOL1_STYLES,
    ROI_POOLERS,
    AttributeHead,
    SingleLevelRoIPool,
    UnroundedAnchorGenerator,
    prepare_trunk,
    rpn_head,
)
from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.layers import IMAGENET_MEAN, IMAGENET_STD
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens

ARCHS = ("c4", "fpn")
DEPTHS = (18, 34, 50, 101, 152)
REGION_BOXES = ("proposal", "detection")
BACKENDS = ("torchvision", "detectron2")
STAGES = (
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
)


@dataclass(frozen=True)
class RegionEmbedderConfig:
    arch: str = "fpn"  # "c4" (res5 RoI head) or "fpn" (TwoMLPHead)
    depth: int = 50  # ResNet depth of the trunk
    image_size: tuple[int, int] = (800, 1333)  # [H, W] the detector runs at
    pixel_mean: tuple[float, ...] = IMAGENET_MEAN  # subtracted after input_scale / bgr
    pixel_std: tuple[float, ...] = IMAGENET_STD  # divided after the mean
    input_scale: float = 1.0  # 255 for caffe-style 0-255 inputs
    bgr: bool = False  # flip RGB -> BGR (caffe models)
    size_divisible: int = 32  # pad H, W up to a multiple (0/1: no padding)
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))  # per RPN level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # per anchor size
    rpn_pre_nms_top_n: int = 1000  # candidates kept per level before RPN NMS
    rpn_post_nms_top_n: int = 1000  # proposals kept per image after RPN NMS
    rpn_nms_thresh: float = 0.7  # IoU of RPN NMS
    pooler_resolution: int = 7  # RoIAlign output side
    pooler_sampling_ratio: int = 2  # RoIAlign samples per bin (0 = adaptive)
    representation_size: int = 1024  # TwoMLPHead width (fpn only)
    num_classes: int = 91  # including background
    nms_mode: str = "batched"  # "per-class", "batched" or "class-agnostic"
    det_nms_thresh: float = 0.5  # IoU of detection NMS
    score_thresh: float = 0.05  # a detection must score above this
    detections_per_img: int = 100  # cap on kept detections per image
    num_regions: int = 36  # K regions emitted per image
    fill_to_k: bool = True  # pin K real regions (fill after detections)
    region_boxes: str = "detection"  # box of a region: "proposal" or "detection"
    out_dim: int | None = None  # Linear projection width; None keeps the RoI width
    calibrate_bn: bool = True  # calibrate FrozenBN stats when weights are random
    calibration_seed: int = 0  # seed of the calibration image
    weights: str | None = None  # checkpoint: torchvision names, or detectron2's (.pth/.pkl)
    backend: str = "torchvision"  # "torchvision" or "detectron2" (detectron2_backend.py)
    stride_in_1x1: bool = False  # stage stride in the 1x1 conv (caffe, d2 STRIDE_IN_1X1)
    res5_dilation: int = 1  # c4: 2 = res5 at stride 1, 3x3s dilated 2 (14x14 head)
    pool1: str = "torchvision"  # "torchvision" (pad 1) or "caffe" (ceil mode, no pad)
    rpn_conv_channels: int | None = None  # RPN 3x3 conv width; None = the feature width
    roi_pooler: str = "align"  # c4: "align" (RoIAlign) or "pool" (RoIPool, caffe)
    anchor_rounding: bool = True  # round base anchors to whole pixels (torchvision; d2 not)
    attribute_classes: int = 0  # >0: attribute head with this many outputs (BUTD: 401)
    nms_prefilter: bool = False  # per-class: only RoIs above score_thresh enter each NMS
    det_nms_boxes: str = "regressed"  # per-class NMS on "regressed" boxes or the "proposal"s


def detectron2_available() -> bool:
    """True if ``import detectron2`` would succeed (it has no PyPI release; it is built from source)."""
    return importlib.util.find_spec("detectron2") is not None


def min_image_side(cfg: RegionEmbedderConfig) -> int:
    """Smallest H or W the backbone takes: the coarsest RPN feature stride (64 with FPN's pool level)."""
    return 16 if cfg.arch == "c4" else 64


def check_config(cfg: RegionEmbedderConfig) -> None:
    """Raise VlpbenchError for any impossible option, before anything is built."""
    if cfg.backend not in BACKENDS:
        raise bad_value("backend", cfg.backend, BACKENDS)
    if cfg.arch not in ARCHS:
        raise bad_value("arch", cfg.arch, ARCHS)
    if cfg.depth not in DEPTHS:
        raise bad_value("depth", cfg.depth, DEPTHS)
    if cfg.nms_mode not in NMS_MODES:
        raise bad_value("nms_mode", cfg.nms_mode, NMS_MODES)
    if cfg.region_boxes not in REGION_BOXES:
        raise bad_value("region_boxes", cfg.region_boxes, REGION_BOXES)
    if len(cfg.image_size) != 2 or min(cfg.image_size) < min_image_side(cfg):
        raise bad_value(
            "image_size",
            tuple(cfg.image_size),
            f"[H, W] with both sides >= {min_image_side(cfg)} for arch {cfg.arch!r}",
        )
    if not 1 <= cfg.num_regions <= cfg.rpn_post_nms_top_n:
        raise bad_value("num_regions", cfg.num_regions, f"1..rpn_post_nms_top_n ({cfg.rpn_post_nms_top_n})")
    if cfg.num_classes < 2:
        raise bad_value("num_classes", cfg.num_classes, "at least 2 (background + one class)")
    want = 1 if cfg.arch == "c4" else 5
    if len(cfg.anchor_sizes) != want:
        raise bad_value("anchor_sizes", cfg.anchor_sizes, f"{want} tuple(s) of sizes for arch {cfg.arch!r}")
    if cfg.out_dim is not None and cfg.out_dim < 1:
        raise bad_value("out_dim", cfg.out_dim, "a positive int or None")
    check_network_options(cfg)


def check_network_options(cfg: RegionEmbedderConfig) -> None:
    """The options that make a caffe / detectron2 network out of torchvision's (rcnn_options)."""
    if cfg.pool1 not in POOL1_STYLES:
        raise bad_value("pool1", cfg.pool1, POOL1_STYLES)
    if cfg.roi_pooler not in ROI_POOLERS:
        raise bad_value("roi_pooler", cfg.roi_pooler, ROI_POOLERS)
    if cfg.roi_pooler == "pool" and cfg.arch != "c4":
        raise bad_value("roi_pooler", cfg.roi_pooler, "'align' for arch 'fpn' ('pool' needs arch 'c4')")
    if cfg.res5_dilation not in (1, 2):
        raise bad_value("res5_dilation", cfg.res5_dilation, "1 or 2")
    if cfg.res5_dilation != 1 and cfg.arch != "c4":
        raise bad_value("res5_dilation", cfg.res5_dilation, "1 for arch 'fpn' (the FPN needs res5 at stride 32)")
    if cfg.stride_in_1x1 and cfg.depth < 50:
        raise bad_value(
            "stride_in_1x1",
            cfg.stride_in_1x1,
            f"False for depth {cfg.depth} (no 1x1 conv in a BasicBlock; bottleneck trunks are depth 50, 101, 152)",
        )
    if cfg.rpn_conv_channels is not None and cfg.rpn_conv_channels < 1:
        raise bad_value("rpn_conv_channels", cfg.rpn_conv_channels, "a positive int or None")
    if cfg.attribute_classes < 0:
        raise bad_value("attribute_classes", cfg.attribute_classes, "0 (no attribute head) or a positive int")
    if cfg.det_nms_boxes not in NMS_BOXES:
        raise bad_value("det_nms_boxes", cfg.det_nms_boxes, NMS_BOXES)


class RegionEmbedder(nn.Module):
    """Faster R-CNN region features: pixel_values [B, 3, H, W] -> VisualTokens [B, K, D] with boxes."""

    def __init__(
        self,
        transform: ImagePreprocess,
        backbone: nn.Module,
        rpn: ProposalStages,
        roi_pooler: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        postprocess: DetectionPostprocess,
        *,
        feature_dim: int,
        num_regions: int,
        fill_to_k: bool = True,
        region_boxes: str = "detection",
        out_dim: int | None = None,
        attribute_head: AttributeHead | None = None,
        workload_facts: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_pooler = roi_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.attribute_head = attribute_head
        self.postprocess = postprocess
        self._init_output(
            feature_dim=feature_dim,
            num_regions=num_regions,
            fill_to_k=fill_to_k,
            region_boxes=region_boxes,
            out_dim=out_dim,
            image_size=transform.image_size,
            workload_facts=workload_facts,
        )

    def _init_output(
        self,
        *,
        feature_dim: int,
        num_regions: int,
        fill_to_k: bool,
        region_boxes: str,
        out_dim: int | None,
        image_size: tuple[int, int],
        workload_facts: dict[str, Any] | None,
    ) -> None:
        """What every backend shares: region selection, the projection, the recorded workload."""
        self.proj = nn.Linear(feature_dim, out_dim) if out_dim is not None else None
        self.feature_dim = feature_dim
        self.num_regions = num_regions
        self.fill_to_k = fill_to_k
        self.region_boxes = region_boxes
        self.image_size = tuple(image_size)
        self.bn_calibrated = False
        self._workload = dict(workload_facts or {})

    @classmethod
    def from_config(cls, cfg: RegionEmbedderConfig) -> RegionEmbedder:
        check_config(cfg)
        if cfg.backend == "detectron2":
            from vlpbench.embedders.detectron2_backend import build_detectron2_region_embedder

            return build_detectron2_region_embedder(cfg)
        anchor_cls = AnchorGenerator if cfg.anchor_rounding else UnroundedAnchorGenerator
        anchors = anchor_cls(
            tuple(tuple(s) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes)
        )
        backbone, pooler, box_head, feature_dim = (_build_fpn if cfg.arch == "fpn" else _build_c4)(cfg)
        rpn = ProposalStages(
            anchors,
            rpn_head(backbone.out_channels, anchors.num_anchors_per_location()[0], cfg.rpn_conv_channels),
            pre_nms_top_n=cfg.rpn_pre_nms_top_n,
            post_nms_top_n=cfg.rpn_post_nms_top_n,
            nms_thresh=cfg.rpn_nms_thresh,
        )
        attributes = (
            AttributeHead(feature_dim, cfg.num_classes, cfg.attribute_classes) if cfg.attribute_classes else None
        )
        model = cls(
            ImagePreprocess(
                cfg.image_size,
                cfg.pixel_mean,
                cfg.pixel_std,
                input_scale=cfg.input_scale,
                bgr=cfg.bgr,
                size_divisible=cfg.size_divisible,
            ),
            backbone,
            rpn,
            pooler,
            box_head,
            FastRCNNPredictor(feature_dim, cfg.num_classes),
            DetectionPostprocess(
                nms_mode=cfg.nms_mode,
                nms_thresh=cfg.det_nms_thresh,
                score_thresh=cfg.score_thresh,
                detections_per_img=cfg.detections_per_img,
                prefilter=cfg.nms_prefilter,
                nms_boxes=cfg.det_nms_boxes,
            ),
            feature_dim=feature_dim,
            num_regions=cfg.num_regions,
            fill_to_k=cfg.fill_to_k,
            region_boxes=cfg.region_boxes,
            out_dim=cfg.out_dim,
            attribute_head=attributes,
            workload_facts=workload_facts(cfg),
        ).eval()
        finish_weights(model, cfg)
        return model

    # ---- the Benchmarkable interface -------------------------------------------------------------
    def make_inputs(self, batch_size: int, *, generator: torch.Generator, device: Union[str, torch.device]):
        """{"pixel_values": [B, 3, H, W] uniform in [0, 1]} at the configured size, made on ``device``."""
        h, w = self.image_size
        x = torch.rand(batch_size, 3, h, w, generator=generator, device=generator.device)
        return {"pixel_values": x.to(device)}

    def workload(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "regions": self.num_regions,
            **self._workload,
            "bn_calibrated": self.bn_calibrated,
        }

    def output_spec(self) -> TokenSpec:
        dim = self.proj.out_features if self.proj is not None else self.feature_dim
        return TokenSpec(dim=dim, num_tokens=self.num_regions, has_boxes=True, schema="region")

    # ---- the pipeline ------------------------------------------------------------------------------
    def _check_pixels(self, pixel_values: Tensor) -> None:
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else type(pixel_values).__name__
            raise bad_value("pixel_values shape", shape, "a float tensor [B, 3, H, W]")
        if not pixel_values.is_floating_point():
            raise bad_value("pixel_values dtype", pixel_values.dtype, "a floating dtype (values in [0, 1])")
        if pixel_values.shape[0] == 0 or min(pixel_values.shape[-2:]) < 1:
            raise bad_value("pixel_values shape", tuple(pixel_values.shape), "B >= 1 and H, W >= 1")

    def run_detector(self, pixel_values: Tensor, stage: StageFn = null_stage):
        """Every stage up to and including detection NMS -> (features [N, D], proposals, Detections, facts)."""
        self._check_pixels(pixel_values)
        with stage("preprocess"):
            images = self.transform(pixel_values)  # [B, 3, H', W'] normalised, padded
        with stage("backbone"):
            feature_maps = self.backbone(images)  # {name: [B, C, h, w]}
        rpn_features = list(feature_maps.values())
        with stage("rpn.head"):
            objectness, deltas = self.rpn.forward_head(rpn_features)
        with stage("rpn.decode"):
            candidates = self.rpn.decode(images, self.image_size, rpn_features, objectness, deltas)
        with stage("rpn.nms"):
            proposals = self.rpn.suppress(candidates).boxes  # B x [R_i, 4]
        with stage("roi_align"):
            pooled = self.roi_pooler(feature_maps, proposals, [self.image_size] * len(proposals))  # [N, C, S, S]
        with stage("roi_head"):
            roi_features = self.box_head(pooled)  # [N, D]
        with stage("box_predictor"):
            class_logits, box_regression = self.box_predictor(roi_features)  # [N, C], [N, 4C]
            attr_logits = (
                self.attribute_head(roi_features, class_logits)  # [N, A]
                if self.attribute_head is not None
                else None
            )
        with stage("det.nms"):
            detections = self.postprocess(class_logits, box_regression, proposals, self.image_size)
        detections.attr_logits = attr_logits
        facts = {
            "rpn_pre_nms": [int(b.shape[0]) for b in candidates.boxes],
            "rpn_post_nms": [int(p.shape[0]) for p in proposals],
            "det_candidates": detections.candidates,
            "det_kept": [int(s.shape[0]) for s in detections.scores],
        }
        return roi_features, proposals, detections, facts

    def forward(self, pixel_values: Tensor, stage: StageFn = null_stage) -> VisualTokens:
        """pixel_values [B, 3, H, W] in [0, 1] -> VisualTokens(features [B, K, D], mask [B, K], boxes [B, K, 4])."""
        roi_features, proposals, detections, facts = self.run_detector(pixel_values, stage)
        with stage("select"):
            regions = select_regions(
                roi_features,
                proposals,
                detections,
                k=self.num_regions,
                fill_to_k=self.fill_to_k,
                region_boxes=self.region_boxes,
                image_size=self.image_size,
            )
        features = regions.features
        if self.proj is not None:
            with stage("project"):
                features = self.proj(features)  # [B, K, D] -> [B, K, out_dim]
        facts.update(
            regions_detected=regions.detected, regions=regions.mask.sum(1).tolist(), bn_calibrated=self.bn_calibrated
        )
        return VisualTokens(features=features, mask=regions.mask, boxes=regions.boxes, extras=facts)

    @torch.no_grad()
    def detect(self, pixel_values: Tensor) -> list[dict[str, Tensor]]:
        """torchvision-style detections per image (boxes in input-pixel coordinates, scores, labels); no filling.

        With nms_mode="batched" this is torchvision's FasterRCNN eval output for the same weights.
        """
        _, _, det, _ = self.run_detector(pixel_values)
        h, w = pixel_values.shape[-2:]
        scale = torch.tensor([w / self.image_size[1], h / self.image_size[0]] * 2, device=pixel_values.device)
        return [
            {"boxes": b * scale if (h, w) != self.image_size else b, "scores": s, "labels": l}
            for b, s, l in zip(det.boxes, det.scores, det.labels)
        ]

    def anchor_layout(self) -> tuple[int, int]:
        """(sizes, aspect ratios) of the anchors at one RPN location (the first level's)."""
        gen = self.rpn.anchor_generator
        return len(gen.sizes[0]), len(gen.aspect_ratios[0])

    def frozen_bn_types(self) -> tuple[type, ...]:
        """The frozen batch-norm classes this backend builds (calibration sets their statistics)."""
        return (FrozenBatchNorm2d,)

    @torch.no_grad()
    def calibrate(self, pixel_values: Tensor) -> int:
        """Set every frozen BN's statistics from one pass over ``pixel_values`` (see calibrate_frozen_bn)."""
        n = calibrate_frozen_bn(self, pixel_values, self.frozen_bn_types())
        self.bn_calibrated = True
        return n


def _build_fpn(cfg: RegionEmbedderConfig) -> tuple[nn.Module, nn.Module, nn.Module, int]:
    """torchvision's ResNet-FPN, MultiScaleRoIAlign and TwoMLPHead -> (backbone, pooler, box head, width)."""
    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{cfg.depth}", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=5
    )
    prepare_trunk(backbone.body, stride_in_1x1=cfg.stride_in_1x1, res5_dilation=1, pool1=cfg.pool1)
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], cfg.pooler_resolution, cfg.pooler_sampling_ratio)
    box_head = TwoMLPHead(backbone.out_channels * cfg.pooler_resolution**2, cfg.representation_size)
    return backbone, pooler, box_head, cfg.representation_size


def _build_c4(cfg: RegionEmbedderConfig) -> tuple[nn.Module, nn.Module, nn.Module, int]:
    """ResNet res2-res4 backbone, single-level RoI pooling on res4, res5 head -> (backbone, pooler, head, width)."""
    trunk = getattr(resnet, f"resnet{cfg.depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
    prepare_trunk(trunk, stride_in_1x1=cfg.stride_in_1x1, res5_dilation=cfg.res5_dilation, pool1=cfg.pool1)
    backbone = C4Backbone(trunk)
    if cfg.roi_pooler == "pool":
        pooler = SingleLevelRoIPool("res4", cfg.pooler_resolution, 1.0 / 16)
    else:
        pooler = SingleLevelRoIAlign("res4", cfg.pooler_resolution, 1.0 / 16, cfg.pooler_sampling_ratio)
    box_head = Res5BoxHead(trunk.layer4)
    return backbone, pooler, box_head, box_head.out_channels


def workload_facts(cfg: RegionEmbedderConfig) -> dict[str, Any]:
    """The configured workload every record carries (the measured counts come from the forward)."""
    return {
        "arch": f"R{cfg.depth}-{cfg.arch.upper()}",
        "num_classes": cfg.num_classes,
        "rpn_pre_nms_top_n": cfg.rpn_pre_nms_top_n,
        "rpn_post_nms_top_n": cfg.rpn_post_nms_top_n,
        "nms_mode": cfg.nms_mode,
        "nms_prefilter": cfg.nms_prefilter,
        "score_thresh": cfg.score_thresh,
        "fill_to_k": cfg.fill_to_k,
        "backend": cfg.backend,
        "roi_pooler": cfg.roi_pooler,
        "pooler_resolution": cfg.pooler_resolution,
        "res5_dilation": cfg.res5_dilation,
        "attribute_classes": cfg.attribute_classes,
    }


def finish_weights(model: RegionEmbedder, cfg: RegionEmbedderConfig) -> None:
    """Load ``cfg.weights``, or calibrate the random weights' frozen BN (never on the meta device)."""
    if cfg.weights is not None:
        from vlpbench.embedders.region_checkpoints import load_region_checkpoint

        load_region_checkpoint(model, cfg.weights)
    elif cfg.calibrate_bn and not _on_meta(model):
        gen = torch.Generator().manual_seed(cfg.calibration_seed)
        model.calibrate(model.make_inputs(1, generator=gen, device="cpu")["pixel_values"])


def _on_meta(model: nn.Module) -> bool:
    """Built under ``torch.device("meta")`` (``vlpbench describe``): shapes only, nothing can run."""
    return any(p.is_meta for p in model.parameters())


def _is_frozen_or_eval_bn(m: nn.Module, frozen_types: tuple[type, ...]) -> bool:
    return isinstance(m, frozen_types) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training)


@torch.no_grad()
def calibrate_frozen_bn(model: nn.Module, images: Any, frozen_types: tuple[type, ...] = (FrozenBatchNorm2d,)) -> int:
    """Run ``model(images)`` once, setting each FrozenBatchNorm2d (or eval-mode BatchNorm) running mean and
    variance to the per-channel statistics of its actual input just before it normalises it.

    Layers are calibrated in execution order, so each sees already-calibrated inputs.  This keeps random-
    init activations O(1) (without it a random ResNet-101 reaches ~3e5 and the RPN finds no boxes, so the
    RoI heads would time nothing).  Returns the number of layers calibrated.
    """
    layers = [m for m in model.modules() if _is_frozen_or_eval_bn(m, frozen_types)]

    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return len(layers)


# torchvision FasterRCNN key prefix -> RegionEmbedder key prefix (first match wins)
TORCHVISION_KEY_MAP = (
    ("backbone.body.", "backbone.body."),
    ("backbone.fpn.", "backbone.fpn."),
    ("rpn.head.", "rpn.head."),
    ("roi_heads.box_head.", "box_head."),
    ("roi_heads.box_predictor.", "box_predictor."),
)


def map_torchvision_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision FasterRCNN state dict -> RegionEmbedder names.

    Drops BatchNorm's ``num_batches_tracked`` (torchvision builds untrained detectors with nn.BatchNorm2d;
    ours use FrozenBatchNorm2d, which has the same four buffers).  Unknown prefixes are kept as they are,
    so the caller reports them as unexpected.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for src, dst in TORCHVISION_KEY_MAP:
            if key.startswith(src):
                key = dst + key[len(src) :]
                break
        out[key] = value
    return out


def load_torchvision_weights(model: RegionEmbedder, source: Union[str, os.PathLike, Mapping[str, Tensor]]) -> None:
    """Load a torchvision-named state dict (a mapping or a ``torch.save``d file) into ``model``.

    Raises VlpbenchError naming missing / unexpected keys and shape mismatches.  Loaded weights replace
    any BN calibration, so ``bn_calibrated`` becomes False.
    """
    if not isinstance(source, Mapping):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise bad_value("weights file", path, "an existing torch.save'd state dict")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a file that is not a state dict
            raise VlpbenchError(f"invalid weights file {path!r}: cannot be read as a state dict ({e})") from e
        if not isinstance(source, Mapping):
            raise VlpbenchError(f"invalid weights file {path!r}: holds {type(source).__name__}, not a state dict")
    mapped = map_torchvision_keys(source)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    shapes = sorted(
        f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(mapped)
        if tuple(mapped[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:

        def short(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = [
            f"{label}: {short(items)}"
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shapes),
            )
            if items
        ]
        raise VlpbenchError("state dict does not fit this region embedder; " + "; ".join(parts))
    model.load_state_dict(mapped)
    model.bn_calibrated = False


def build_region_embedder(cfg: RegionEmbedderConfig) -> RegionEmbedder:
    """Registry builder: config -> RegionEmbedder."""
    return RegionEmbedder.from_config(cfg)
