"""Faster R-CNN stages for the region embedder, each callable (and so timeable) on its own.

torchvision's ``RegionProposalNetwork.forward`` and ``RoIHeads.forward`` bury top-k, NMS and RoIAlign
inside one call; here the same torchvision building blocks (AnchorGenerator, RPNHead, BoxCoder,
MultiScaleRoIAlign, TwoMLPHead, FastRCNNPredictor, torchvision.ops) are called from separate methods so
that the embedder can wrap each in its own stage.  With the same weights and the ``batched`` NMS mode the
arithmetic is torchvision's, op for op (see ``tests/embedders/test_region.py``).

Shapes: B images, N = sum of proposals over the batch, R_i proposals of image i, C classes including
background (index 0), D feature width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align

from vlpbench.errors import bad_value

NMS_MODES = ("per-class", "batched", "class-agnostic")
NMS_BOXES = ("regressed", "proposal")


class ImagePreprocess(nn.Module):
    """Normalise, resize to the configured size if needed, pad to the size divisibility.

    ``input_scale`` and ``bgr`` express caffe-style inputs (0-255, BGR) as in bottom-up-attention.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        *,
        input_scale: float = 1.0,
        bgr: bool = False,
        size_divisible: int = 32,
    ):
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.input_scale = float(input_scale)
        self.bgr = bool(bgr)
        self.size_divisible = int(size_divisible)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32), persistent=False)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, h, w] in [0, 1] -> [B, 3, H', W'] with (H, W) = image_size padded up to size_divisible."""
        x = pixel_values
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.bgr:
            x = x.flip(1)
        # same arithmetic as GeneralizedRCNNTransform.normalize, broadcast over the batch
        x = (x - self.pixel_mean[:, None, None]) / self.pixel_std[:, None, None]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        d = self.size_divisible
        if d > 1:
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % d, 0, (-h) % d))  # zeros on the bottom/right, as torchvision's batch_images
        return x


class C4Backbone(nn.Module):
    """ResNet stem + res2..res4 (stride 16): [B, 3, H, W] -> {"res4": [B, C4, H/16, W/16]}."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.body = nn.Sequential()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
            self.body.add_module(name, getattr(trunk, name))
        last = trunk.layer3[-1]
        self.out_channels = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"res4": self.body(x)}


class Res5BoxHead(nn.Module):
    """The C4 RoI head: ResNet res5 then global average pool.

    torchvision / detectron2 layout (first block stride 2): [N, C4, 14, 14] -> res5 -> [N, C5, 7, 7] -> mean
    -> [N, C5].  bottom-up-attention's (stride 1, 3x3 dilated 2, see rcnn_options.prepare_trunk) stays at 14x14.
    """

    def __init__(self, layer4: nn.Module):
        super().__init__()
        self.res5 = layer4
        last = layer4[-1]
        self.out_channels = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.res5(x).mean(dim=(2, 3))


class SingleLevelRoIAlign(nn.Module):
    """RoIAlign on one named feature map with a fixed scale (C4 models); same call as MultiScaleRoIAlign."""

    def __init__(
        self, featmap_name: str, output_size: int, spatial_scale: float, sampling_ratio: int = 0, aligned: bool = True
    ):
        super().__init__()
        self.featmap_name = featmap_name
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        """features[name]: [B, C, h, w]; boxes: B x [R_i, 4] -> [N, C, S, S]."""
        return roi_align(
            features[self.featmap_name], boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )


@dataclass
class Proposals:
    """Per-image proposal lists (torchvision keeps these as lists too)."""

    boxes: list[Tensor]  # B x [R_i, 4] absolute x1y1x2y2 in the preprocessed image
    scores: list[Tensor]  # B x [R_i] objectness probability
    levels: list[Tensor]  # B x [R_i] feature level each came from (RPN NMS runs per level)


class ProposalStages(nn.Module):
    """The RPN split into ``forward_head`` (convs), ``decode`` (anchors, box decoding, pre-NMS top-k,
    clipping, small-box and score filters) and ``suppress`` (NMS per level, post-NMS top-k).

    Mirrors ``torchvision.models.detection.rpn.RegionProposalNetwork`` at test time.
    """

    def __init__(
        self,
        anchor_generator: nn.Module,
        head: nn.Module,
        *,
        pre_nms_top_n: int,
        post_nms_top_n: int,
        nms_thresh: float,
        score_thresh: float = 0.0,
        min_size: float = 1e-3,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = min_size

    def forward_head(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """L x [B, C, h_l, w_l] -> objectness L x [B, A, h_l, w_l], deltas L x [B, 4A, h_l, w_l]."""
        return self.head(features)

    def decode(
        self,
        images: Tensor,
        image_size: tuple[int, int],
        features: list[Tensor],
        objectness: list[Tensor],
        deltas: list[Tensor],
    ) -> Proposals:
        """Anchors + deltas -> per-image candidate boxes entering NMS (``images``: the padded batch)."""
        num_images = images.shape[0]
        anchors = self.anchor_generator(ImageList(images, [image_size] * num_images), features)
        num_anchors_per_level = [o[0].numel() for o in objectness]  # A * h_l * w_l
        obj, reg = concat_box_prediction_layers(objectness, deltas)  # [B*M, 1], [B*M, 4]
        boxes = self.box_coder.decode(reg.detach(), anchors).view(num_images, -1, 4)  # [B, M, 4]
        obj = obj.reshape(num_images, -1)  # [B, M]
        levels = torch.cat(
            [torch.full((n,), i, dtype=torch.int64, device=obj.device) for i, n in enumerate(num_anchors_per_level)]
        )

        # top-k per level before NMS, as torchvision's _get_top_n_idx
        top_idx, offset = [], 0
        for ob in obj.split(num_anchors_per_level, 1):
            k = min(self.pre_nms_top_n, ob.shape[1])
            top_idx.append(ob.topk(k, dim=1).indices + offset)
            offset += ob.shape[1]
        top_idx = torch.cat(top_idx, dim=1)  # [B, K_pre]
        batch_idx = torch.arange(num_images, device=obj.device)[:, None]
        scores = torch.sigmoid(obj[batch_idx, top_idx])  # [B, K_pre]
        boxes = box_ops.clip_boxes_to_image(boxes[batch_idx, top_idx], image_size)  # [B, K_pre, 4]
        levels = levels[top_idx]  # [B, K_pre]

        out = Proposals([], [], [])
        for b, s, lv in zip(boxes, scores, levels):  # data-dependent sizes: per-image lists, as torchvision
            keep = box_ops.remove_small_boxes(b, self.min_size)
            b, s, lv = b[keep], s[keep], lv[keep]
            keep = torch.where(s >= self.score_thresh)[0]
            out.boxes.append(b[keep])
            out.scores.append(s[keep])
            out.levels.append(lv[keep])
        return out

    def suppress(self, candidates: Proposals) -> Proposals:
        """NMS per feature level at ``nms_thresh``, then the ``post_nms_top_n`` best per image."""
        out = Proposals([], [], [])
        for b, s, lv in zip(candidates.boxes, candidates.scores, candidates.levels):
            keep = box_ops.batched_nms(b, s, lv, self.nms_thresh)[: self.post_nms_top_n]
            out.boxes.append(b[keep])
            out.scores.append(s[keep])
            out.levels.append(lv[keep])
        return out


@dataclass
class Detections:
    """Detection-stage output.  Per-image lists of kept detections plus the dense per-RoI predictions."""

    boxes: list[Tensor]  # B x [k_i, 4] class-specific boxes, absolute
    scores: list[Tensor]  # B x [k_i] softmax score of the detected class
    labels: list[Tensor]  # B x [k_i] class index (1..C-1)
    rois: list[Tensor]  # B x [k_i] index of the RoI (row of the concatenated proposals) it came from
    candidates: list[int]  # per image: class-box pairs that entered NMS
    pred_boxes: Tensor  # [N, C, 4] decoded, clipped class-specific boxes for every RoI
    class_scores: Tensor  # [N, C] softmax over classes for every RoI
    attr_logits: Tensor | None = None  # [N, A] attribute logits for every RoI (attribute head only)


def _cap_per_image(img: Tensor, scores: Tensor, cap: int, num_images: int) -> tuple[Tensor, Tensor]:
    """Indices of the ``cap`` best-scoring entries of each image, grouped by image, score-descending.

    img, scores: [M] -> (keep [M'], per-image counts [B]).  Stable, so an order already sorted by
    score (as batched_nms returns) is kept.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(img[order], stable=True)]
    img_sorted = img[order]
    counts = torch.bincount(img_sorted, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=img.device) - starts[img_sorted]
    keep = order[rank < cap]
    return keep, torch.bincount(img[keep], minlength=num_images)


class DetectionPostprocess(nn.Module):
    """Box decoding, softmax, clipping and detection NMS in one of three modes.

    * ``per-class``: an explicit loop over the C-1 foreground classes, each calling torchvision.ops.nms on
      every RoI's box for that class, with no score filter before NMS (bottom-up-attention's
      ``generate_tsv.py``; its cost is the paper's ">500 ms for 1,600 classes").  The images of a batch
      share each per-class call through a coordinate offset (torchvision's batched_nms trick).
      bottom-up-attention suppresses with the RoI boxes (``nms_boxes="proposal"``); detectron2 and
      torchvision with the class-specific regressed boxes (``"regressed"``).  Surviving detections scoring
      <= score_thresh are then dropped, which keeps the same set as filtering first (greedy NMS only lets
      higher scores suppress).  With ``prefilter`` each class's NMS sees only the RoIs scoring above
      score_thresh (detectron2's ``fast_rcnn_inference`` and the NMS of bottom-up-attention's
      ``test_net``): same detections, far fewer candidates.
    * ``batched``: torchvision's ``RoIHeads.postprocess_detections``: score filter, small-box filter,
      torchvision.ops.batched_nms over (image, class) groups.
    * ``class-agnostic``: each RoI's best foreground class and its box, then torchvision.ops.nms across
      classes (VinVL).

    All modes keep at most ``detections_per_img`` per image.
    """

    def __init__(
        self,
        *,
        nms_mode: str,
        nms_thresh: float,
        score_thresh: float,
        detections_per_img: int,
        bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        prefilter: bool = False,
        nms_boxes: str = "regressed",
    ):
        super().__init__()
        if nms_mode not in NMS_MODES:
            raise bad_value("nms_mode", nms_mode, NMS_MODES)
        if nms_boxes not in NMS_BOXES:
            raise bad_value("nms_boxes", nms_boxes, NMS_BOXES)
        self.nms_mode = nms_mode
        self.prefilter = prefilter
        self.nms_boxes = nms_boxes
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.detections_per_img = detections_per_img
        self.box_coder = det_utils.BoxCoder(bbox_reg_weights)

    def forward(
        self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor], image_size: tuple[int, int]
    ) -> Detections:
        """class_logits [N, C], box_regression [N, C*4], proposals B x [R_i, 4] -> Detections."""
        num_images, _num_classes = len(proposals), class_logits.shape[-1]
        device = class_logits.device
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # [N, C, 4]
        pred_boxes = box_ops.clip_boxes_to_image(pred_boxes, image_size)
        scores = F.softmax(class_logits, -1)  # [N, C]
        counts = torch.tensor([p.shape[0] for p in proposals], device=device)
        roi_img = torch.repeat_interleave(torch.arange(num_images, device=device), counts)  # [N]
        if self.nms_mode == "per-class":
            nms_boxes = torch.cat(proposals) if self.nms_boxes == "proposal" else None
            rois, labels, cand = self._per_class(pred_boxes, scores, roi_img, num_images, image_size, nms_boxes)
        elif self.nms_mode == "batched":
            rois, labels, cand = self._batched(pred_boxes, scores, roi_img, num_images)
        else:
            rois, labels, cand = self._class_agnostic(pred_boxes, scores, roi_img, num_images)
        det_scores = scores[rois, labels]
        keep, per_image = _cap_per_image(roi_img[rois], det_scores, self.detections_per_img, num_images)
        rois, labels, det_scores = rois[keep], labels[keep], det_scores[keep]
        split = per_image.tolist()
        return Detections(
            boxes=list(pred_boxes[rois, labels].split(split)),
            scores=list(det_scores.split(split)),
            labels=list(labels.split(split)),
            rois=list(rois.split(split)),
            candidates=cand,
            pred_boxes=pred_boxes,
            class_scores=scores,
        )

    def _per_class(
        self,
        pred_boxes: Tensor,
        scores: Tensor,
        roi_img: Tensor,
        num_images: int,
        image_size: tuple[int, int],
        nms_boxes: Tensor | None,
    ):
        """nms_boxes [N, 4]: one box per RoI for every class (the proposals), or None: each class's own box."""
        offsets = (roi_img * (max(image_size) + 1)).to(pred_boxes.dtype)[:, None]  # [N, 1], images never overlap
        rois, labels = [], []
        cand = torch.zeros(num_images, dtype=torch.long, device=scores.device)
        for c in range(1, scores.shape[1]):
            s = scores[:, c]
            boxes = (pred_boxes[:, c] if nms_boxes is None else nms_boxes) + offsets  # [N, 4]
            if self.prefilter:
                idx = torch.where(s > self.score_thresh)[0]
                keep = idx[box_ops.nms(boxes[idx], s[idx], self.nms_thresh)]
                cand += torch.bincount(roi_img[idx], minlength=num_images)
            else:
                keep = box_ops.nms(boxes, s, self.nms_thresh)
                keep = keep[s[keep] > self.score_thresh]
                cand += torch.bincount(roi_img, minlength=num_images)
            rois.append(keep)
            labels.append(torch.full_like(keep, c))
        rois, labels = torch.cat(rois), torch.cat(labels)
        return rois, labels, cand.tolist()

    def _batched(self, pred_boxes: Tensor, scores: Tensor, roi_img: Tensor, num_images: int):
        n, c = scores.shape
        rois = torch.arange(n, device=scores.device)[:, None].expand(n, c - 1).reshape(-1)  # [N*(C-1)]
        labels = torch.arange(1, c, device=scores.device)[None, :].expand(n, c - 1).reshape(-1)
        boxes = pred_boxes[:, 1:].reshape(-1, 4)  # [N, C-1, 4] -> [N*(C-1), 4]
        flat = scores[:, 1:].reshape(-1)
        idx = torch.where(flat > self.score_thresh)[0]
        idx = idx[box_ops.remove_small_boxes(boxes[idx], min_size=1e-2)]
        groups = roi_img[rois[idx]] * c + labels[idx]  # independent NMS per (image, class)
        cand = torch.bincount(roi_img[rois[idx]], minlength=num_images).tolist()
        keep = idx[box_ops.batched_nms(boxes[idx], flat[idx], groups, self.nms_thresh)]
        return rois[keep], labels[keep], cand

    def _class_agnostic(self, pred_boxes: Tensor, scores: Tensor, roi_img: Tensor, num_images: int):
        best, labels = scores[:, 1:].max(dim=1)  # [N]
        labels = labels + 1
        rois = torch.arange(scores.shape[0], device=scores.device)
        boxes = pred_boxes[rois, labels]  # [N, 4]
        idx = torch.where(best > self.score_thresh)[0]
        idx = idx[box_ops.remove_small_boxes(boxes[idx], min_size=1e-2)]
        cand = torch.bincount(roi_img[idx], minlength=num_images).tolist()
        keep = idx[box_ops.batched_nms(boxes[idx], best[idx], roi_img[idx], self.nms_thresh)]
        return rois[keep], labels[keep], cand


@dataclass
class Regions:
    features: Tensor  # [B, K, D]
    mask: Tensor  # [B, K] bool, True = a real region
    boxes: Tensor  # [B, K, 4] normalised x1y1x2y2
    detected: list[int]  # per image: RoIs with a surviving detection (before filling to K)


def select_regions(
    features: Tensor,
    proposals: list[Tensor],
    det: Detections,
    *,
    k: int,
    fill_to_k: bool,
    region_boxes: str,
    image_size: tuple[int, int],
) -> Regions:
    """Top-K RoIs per image: first those with a surviving detection (by their best detection score),
    then, if ``fill_to_k``, the rest by their best foreground score (bottom-up-attention's MIN_BOXES fill).

    features [N, D] (one row per RoI) -> Regions with features [B, K, D].  A RoI's box is its proposal
    (``region_boxes="proposal"``, bottom-up-attention) or the box of its detected / best class
    (``"detection"``).  Rows beyond an image's proposal count are zero and masked out.
    """
    num_images, n, device = len(proposals), features.shape[0], features.device
    counts = [p.shape[0] for p in proposals]
    scores = det.class_scores
    det_rois, det_scores, det_labels = torch.cat(det.rois), torch.cat(det.scores), torch.cat(det.labels)

    best = scores.new_zeros(n).scatter_reduce_(0, det_rois, det_scores, "amax")  # [N]
    detected = torch.zeros(n, dtype=torch.bool, device=device)
    detected[det_rois] = True
    fg_best, label = scores[:, 1:].max(dim=1)  # filler order and class: best foreground class
    label = label + 1
    winner = det_scores == best[det_rois]
    label[det_rois[winner]] = det_labels[winner]
    key = torch.where(detected, 2.0 + best, fg_best)  # detections rank above fillers

    # [N] -> [B, max(R_max, K)] padded with -1
    counts_t = torch.tensor(counts, dtype=torch.long, device=device)
    starts = torch.cumsum(counts_t, 0) - counts_t  # [B] first row of each image
    img = torch.repeat_interleave(torch.arange(num_images, device=device), counts_t)  # [N]
    key_b = key.new_full((num_images, max(max(counts, default=0), k)), -1.0)
    key_b[img, torch.arange(n, device=device) - starts[img]] = key
    top, idx = key_b.topk(k, dim=1)  # [B, K]
    mask = top >= 0 if fill_to_k else top >= 2.0
    rows = torch.where(top >= 0, idx + starts[:, None], torch.full_like(idx, n))  # row n = the zero row

    feats = torch.cat([features, features.new_zeros(1, features.shape[1])])[rows]  # [B, K, D]
    if region_boxes == "proposal":
        all_boxes = torch.cat(proposals)  # [N, 4]
    else:
        all_boxes = det.pred_boxes[torch.arange(n, device=device), label]  # [N, 4]
    boxes = torch.cat([all_boxes, all_boxes.new_zeros(1, 4)])[rows]  # [B, K, 4]
    h, w = image_size
    boxes = boxes / boxes.new_tensor([w, h, w, h])
    feats = feats * mask[..., None]
    boxes = boxes * mask[..., None]
    detected_per_image = (
        torch.zeros(num_images, dtype=torch.long, device=device).index_add_(0, img, detected.long()).tolist()
    )
    return Regions(feats, mask, boxes, detected_per_image)
