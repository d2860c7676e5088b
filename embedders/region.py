"""Region-feature visual embedder: a Faster R-CNN read as named stages (ViLT's class (c) visual embedder).

``RegionEmbedder(transform, backbone, rpn, roi_pooler, box_head, box_predictor, postprocess)`` reads like
torchvision's ``GeneralizedRCNN``; its ``forward`` names every intermediate and times each piece:

    preprocess -> backbone -> rpn.head -> rpn.decode -> rpn.nms -> roi_align -> roi_head -> box_predictor
    -> det.nms -> select [-> project]

Two backbone layouts: ``c4`` (bottom-up-attention: ResNet res2-res4, RPN on C4, RoIAlign 14x14, res5 head,
mean pool) and ``fpn`` (torchvision's fasterrcnn_resnet50_fpn).  Random weights make scores meaningless,
so by default the output is pinned to exactly ``num_regions`` regions (detections first, then filled in
score order) and ``extras`` records how much work each stage really did.

The detectron2 backend is detected (:func:`detectron2_available`) but not implemented: detectron2 has no
PyPI release and is not installed here, so ``backend="detectron2"`` raises a VlpbenchError.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from vlpbench.embedders.rcnn_heads import (NMS_MODES, C4Backbone, DetectionPostprocess, Detections, ImagePreprocess,
                                  ProposalStages, Res5BoxHead, SingleLevelRoIAlign, select_regions)
from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.layers import IMAGENET_MEAN, IMAGENET_STD
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens

ARCHS = ("c4", "fpn")
DEPTHS = (18, 34, 50, 101, 152)
REGION_BOXES = ("proposal", "detection")
BACKENDS = ("torchvision", "detectron2")
STAGES = ("preprocess", "backbone", "rpn.head", "rpn.decode", "rpn.nms", "roi_align", "roi_head",
          "box_predictor", "det.nms", "select")


@dataclass(frozen=True)
class RegionEmbedderConfig:
    arch: str = "fpn"                                    # "c4" (res5 RoI head) or "fpn" (TwoMLPHead)
    depth: int = 50                                      # ResNet depth of the trunk
    image_size: Tuple[int, int] = (800, 1333)            # [H, W] the detector runs at
    pixel_mean: Tuple[float, ...] = IMAGENET_MEAN        # subtracted after input_scale / bgr
    pixel_std: Tuple[float, ...] = IMAGENET_STD          # divided after the mean
    input_scale: float = 1.0                             # 255 for caffe-style 0-255 inputs
    bgr: bool = False                                    # flip RGB -> BGR (caffe models)
    size_divisible: int = 32                             # pad H, W up to a multiple (0/1: no padding)
    anchor_sizes: Tuple[Tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))  # per RPN level
    aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)   # per anchor size
    rpn_pre_nms_top_n: int = 1000                        # candidates kept per level before RPN NMS
    rpn_post_nms_top_n: int = 1000                       # proposals kept per image after RPN NMS
    rpn_nms_thresh: float = 0.7                          # IoU of RPN NMS
    pooler_resolution: int = 7                           # RoIAlign output side
    pooler_sampling_ratio: int = 2                       # RoIAlign samples per bin (0 = adaptive)
    representation_size: int = 1024                      # TwoMLPHead width (fpn only)
    num_classes: int = 91                                # including background
    nms_mode: str = "batched"                            # "per-class", "batched" or "class-agnostic"
    det_nms_thresh: float = 0.5                          # IoU of detection NMS
    score_thresh: float = 0.05                           # a detection must score above this
    detections_per_img: int = 100                        # cap on kept detections per image
    num_regions: int = 36                                # K regions emitted per image
    fill_to_k: bool = True                               # pin K real regions (fill after detections)
    region_boxes: str = "detection"                      # box of a region: "proposal" or "detection"
    out_dim: Optional[int] = None                        # Linear projection width; None keeps the RoI width
    calibrate_bn: bool = True                            # calibrate FrozenBN stats when weights are random
    calibration_seed: int = 0                            # seed of the calibration image
    weights: Optional[str] = None                        # torch.save'd state dict (torchvision key names)
    backend: str = "torchvision"                         # "torchvision" or "detectron2" (not implemented)


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
    if cfg.backend == "detectron2":
        if not detectron2_available():
            raise VlpbenchError(
                "detectron2 backend requested but not installed; pip install "
                "'git+https://github.com/facebookresearch/detectron2.git' (it builds from source), "
                "or use backend='torchvision'")
        raise VlpbenchError("detectron2 is installed but vlpbench has no detectron2 backend yet; "
                            "accepted backend: torchvision")
    if cfg.arch not in ARCHS:
        raise bad_value("arch", cfg.arch, ARCHS)
    if cfg.depth not in DEPTHS:
        raise bad_value("depth", cfg.depth, DEPTHS)
    if cfg.nms_mode not in NMS_MODES:
        raise bad_value("nms_mode", cfg.nms_mode, NMS_MODES)
    if cfg.region_boxes not in REGION_BOXES:
        raise bad_value("region_boxes", cfg.region_boxes, REGION_BOXES)
    if len(cfg.image_size) != 2 or min(cfg.image_size) < min_image_side(cfg):
        raise bad_value("image_size", tuple(cfg.image_size),
                        f"[H, W] with both sides >= {min_image_side(cfg)} for arch {cfg.arch!r}")
    if not 1 <= cfg.num_regions <= cfg.rpn_post_nms_top_n:
        raise bad_value("num_regions", cfg.num_regions, f"1..rpn_post_nms_top_n ({cfg.rpn_post_nms_top_n})")
    if cfg.num_classes < 2:
        raise bad_value("num_classes", cfg.num_classes, "at least 2 (background + one class)")
    want = 1 if cfg.arch == "c4" else 5
    if len(cfg.anchor_sizes) != want:
        raise bad_value("anchor_sizes", cfg.anchor_sizes, f"{want} tuple(s) of sizes for arch {cfg.arch!r}")
    if cfg.out_dim is not None and cfg.out_dim < 1:
        raise bad_value("out_dim", cfg.out_dim, "a positive int or None")


class RegionEmbedder(nn.Module):
    """Faster R-CNN region features: pixel_values [B, 3, H, W] -> VisualTokens [B, K, D] with boxes."""

    def __init__(self, transform: ImagePreprocess, backbone: nn.Module, rpn: ProposalStages, roi_pooler: nn.Module,
                 box_head: nn.Module, box_predictor: nn.Module, postprocess: DetectionPostprocess, *,
                 feature_dim: int, num_regions: int, fill_to_k: bool = True, region_boxes: str = "detection",
                 out_dim: Optional[int] = None, workload_facts: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_pooler = roi_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.postprocess = postprocess
        self.proj = nn.Linear(feature_dim, out_dim) if out_dim is not None else None
        self.feature_dim = feature_dim
        self.num_regions = num_regions
        self.fill_to_k = fill_to_k
        self.region_boxes = region_boxes
        self.image_size = transform.image_size
        self.bn_calibrated = False
        self._workload = dict(workload_facts or {})

    @classmethod
    def from_config(cls, cfg: RegionEmbedderConfig) -> "RegionEmbedder":
        check_config(cfg)
        trunk_name = f"resnet{cfg.depth}"
        anchors = AnchorGenerator(tuple(tuple(s) for s in cfg.anchor_sizes),
                                  (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))
        if cfg.arch == "fpn":
            backbone = resnet_fpn_backbone(backbone_name=trunk_name, weights=None, norm_layer=FrozenBatchNorm2d,
                                           trainable_layers=5)
            pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], cfg.pooler_resolution, cfg.pooler_sampling_ratio)
            box_head = TwoMLPHead(backbone.out_channels * cfg.pooler_resolution ** 2, cfg.representation_size)
            feature_dim = cfg.representation_size
        else:
            trunk = getattr(resnet, trunk_name)(weights=None, norm_layer=FrozenBatchNorm2d)
            backbone = C4Backbone(trunk)
            pooler = SingleLevelRoIAlign("res4", cfg.pooler_resolution, 1.0 / 16, cfg.pooler_sampling_ratio)
            box_head = Res5BoxHead(trunk.layer4)
            feature_dim = box_head.out_channels
        rpn = ProposalStages(anchors, RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
                             pre_nms_top_n=cfg.rpn_pre_nms_top_n, post_nms_top_n=cfg.rpn_post_nms_top_n,
                             nms_thresh=cfg.rpn_nms_thresh)
        model = cls(
            ImagePreprocess(cfg.image_size, cfg.pixel_mean, cfg.pixel_std, input_scale=cfg.input_scale, bgr=cfg.bgr,
                            size_divisible=cfg.size_divisible),
            backbone, rpn, pooler, box_head, FastRCNNPredictor(feature_dim, cfg.num_classes),
            DetectionPostprocess(nms_mode=cfg.nms_mode, nms_thresh=cfg.det_nms_thresh, score_thresh=cfg.score_thresh,
                                 detections_per_img=cfg.detections_per_img),
            feature_dim=feature_dim, num_regions=cfg.num_regions, fill_to_k=cfg.fill_to_k,
            region_boxes=cfg.region_boxes, out_dim=cfg.out_dim,
            workload_facts={"arch": f"R{cfg.depth}-{cfg.arch.upper()}", "num_classes": cfg.num_classes,
                            "rpn_pre_nms_top_n": cfg.rpn_pre_nms_top_n, "rpn_post_nms_top_n": cfg.rpn_post_nms_top_n,
                            "nms_mode": cfg.nms_mode, "score_thresh": cfg.score_thresh, "fill_to_k": cfg.fill_to_k,
                            "backend": cfg.backend},
        ).eval()
        if cfg.weights is not None:
            load_torchvision_weights(model, cfg.weights)
        elif cfg.calibrate_bn:
            gen = torch.Generator().manual_seed(cfg.calibration_seed)
            model.calibrate(model.make_inputs(1, generator=gen, device="cpu")["pixel_values"])
        return model

    # ---- the Benchmarkable interface -------------------------------------------------------------
    def make_inputs(self, batch_size: int, *, generator: torch.Generator, device: Union[str, torch.device]):
        """{"pixel_values": [B, 3, H, W] uniform in [0, 1]} at the configured size, made on ``device``."""
        h, w = self.image_size
        x = torch.rand(batch_size, 3, h, w, generator=generator, device=generator.device)
        return {"pixel_values": x.to(device)}

    def workload(self) -> Dict[str, Any]:
        return {"image_size": list(self.image_size), "regions": self.num_regions, **self._workload,
                "bn_calibrated": self.bn_calibrated}

    def output_spec(self) -> TokenSpec:
        dim = self.proj.out_features if self.proj is not None else self.feature_dim
        return TokenSpec(dim=dim, num_tokens=self.num_regions, has_boxes=True)

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
        with stage("det.nms"):
            detections = self.postprocess(class_logits, box_regression, proposals, self.image_size)
        facts = {"rpn_pre_nms": [int(b.shape[0]) for b in candidates.boxes],
                 "rpn_post_nms": [int(p.shape[0]) for p in proposals],
                 "det_candidates": detections.candidates,
                 "det_kept": [int(s.shape[0]) for s in detections.scores]}
        return roi_features, proposals, detections, facts

    def forward(self, pixel_values: Tensor, stage: StageFn = null_stage) -> VisualTokens:
        """pixel_values [B, 3, H, W] in [0, 1] -> VisualTokens(features [B, K, D], mask [B, K], boxes [B, K, 4])."""
        roi_features, proposals, detections, facts = self.run_detector(pixel_values, stage)
        with stage("select"):
            regions = select_regions(roi_features, proposals, detections, k=self.num_regions,
                                     fill_to_k=self.fill_to_k, region_boxes=self.region_boxes,
                                     image_size=self.image_size)
        features = regions.features
        if self.proj is not None:
            with stage("project"):
                features = self.proj(features)  # [B, K, D] -> [B, K, out_dim]
        facts.update(regions_detected=regions.detected, regions=regions.mask.sum(1).tolist(),
                     bn_calibrated=self.bn_calibrated)
        return VisualTokens(features=features, mask=regions.mask, boxes=regions.boxes, extras=facts)

    @torch.no_grad()
    def detect(self, pixel_values: Tensor) -> List[Dict[str, Tensor]]:
        """torchvision-style detections per image (boxes in input-pixel coordinates, scores, labels); no filling.

        With nms_mode="batched" this is torchvision's FasterRCNN eval output for the same weights.
        """
        _, _, det, _ = self.run_detector(pixel_values)
        h, w = pixel_values.shape[-2:]
        scale = torch.tensor([w / self.image_size[1], h / self.image_size[0]] * 2, device=pixel_values.device)
        return [{"boxes": b * scale if (h, w) != self.image_size else b, "scores": s, "labels": l}
                for b, s, l in zip(det.boxes, det.scores, det.labels)]

    @torch.no_grad()
    def calibrate(self, pixel_values: Tensor) -> int:
        """Set every frozen BN's statistics from one pass over ``pixel_values`` (see calibrate_frozen_bn)."""
        n = calibrate_frozen_bn(self, pixel_values)
        self.bn_calibrated = True
        return n


def _is_frozen_or_eval_bn(m: nn.Module) -> bool:
    return isinstance(m, FrozenBatchNorm2d) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training)


@torch.no_grad()
def calibrate_frozen_bn(model: nn.Module, images: Any) -> int:
    """Run ``model(images)`` once, setting each FrozenBatchNorm2d (or eval-mode BatchNorm) running mean and
    variance to the per-channel statistics of its actual input just before it normalises it.

    Layers are calibrated in execution order, so each sees already-calibrated inputs.  This keeps random-
    init activations O(1) (without it a random ResNet-101 reaches ~3e5 and the RPN finds no boxes, see
    REFERENCE.md section 7).  Returns the number of layers calibrated.
    """
    layers = [m for m in model.modules() if _is_frozen_or_eval_bn(m)]

    def hook(module: nn.Module, args: Tuple[Tensor, ...]) -> None:
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


def map_torchvision_keys(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
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
                key = dst + key[len(src):]
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
    shapes = sorted(f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
                    for k in set(own) & set(mapped) if tuple(mapped[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        def short(items: List[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = [f"{label}: {short(items)}" for label, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
        raise VlpbenchError("state dict does not fit this region embedder; " + "; ".join(parts))
    model.load_state_dict(mapped)
    model.bn_calibrated = False


def build_region_embedder(cfg: RegionEmbedderConfig) -> RegionEmbedder:
    """Registry builder: config -> RegionEmbedder."""
    return RegionEmbedder.from_config(cfg)
