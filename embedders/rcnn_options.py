"""The choices that make one Faster R-CNN differ from another, as small torchvision-built parts.

bottom-up-attention's test network (peteanderson80/bottom-up-attention,
``models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt``) differs from torchvision's R101-C4 in
five places, each expressed here on top of torchvision's modules:

* the stride of each stage's first block sits in its 1x1 conv (caffe / MSRA ResNet, detectron2's
  ``STRIDE_IN_1X1``), not in the 3x3 as torchvision has it (:func:`prepare_trunk`);
* res5 runs its first block at stride 1 with every 3x3 dilated 2 (detectron2's ``RES5_DILATION``), so the
  RoI head works on 14x14 and then global-average-pools (:func:`prepare_trunk`);
* pool1 is caffe's max pool: ceil mode, no padding (:func:`prepare_trunk`);
* the RPN's 3x3 conv is 512 wide, not as wide as res4 (:func:`rpn_head`);
* RoIPool (``torchvision.ops.roi_pool``) instead of RoIAlign (:class:`SingleLevelRoIPool`);
* a 400-way attribute head on the pooled feature and the predicted class (:class:`AttributeHead`).

:class:`UnroundedAnchorGenerator` gives detectron2's base anchors (torchvision rounds them to whole pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import roi_pool
from torchvision.ops.misc import Conv2dNormActivation

POOL1_STYLES = ("torchvision", "caffe")
ROI_POOLERS = ("align", "pool")


def _three_by_three(block: nn.Module) -> list[nn.Conv2d]:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


def _move_stride_to_1x1(layer: nn.Sequential) -> None:
    """First bottleneck of a stage: stride from conv2 (3x3) to conv1 (1x1); the shortcut keeps its stride."""
    first = layer[0]
    first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)


def _dilate_stage(layer: nn.Sequential, dilation: int) -> None:
    """Stage at stride 1 with every 3x3 conv dilated (padding = dilation keeps the size)."""
    for block in layer:
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d):
                conv.stride = (1, 1)
        for conv in _three_by_three(block):
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


def prepare_trunk(trunk: nn.Module, *, stride_in_1x1: bool, res5_dilation: int, pool1: str) -> nn.Module:
    """Edit a torchvision ResNet in place into the caffe / detectron2 layout the options name; returns it.

    ``stride_in_1x1`` needs bottleneck blocks (ResNet-50 and deeper): a BasicBlock has no 1x1 conv.
    """
    if stride_in_1x1:
        for layer in (trunk.layer2, trunk.layer3, trunk.layer4):
            _move_stride_to_1x1(layer)
    if res5_dilation > 1:
        _dilate_stage(trunk.layer4, res5_dilation)
    if pool1 == "caffe":  # caffe pools with ceil mode and no padding: 400x667 -> 200x333, not 200x334
        trunk.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    return trunk


def rpn_head(in_channels: int, num_anchors: int, conv_channels: int | None) -> RPNHead:
    """torchvision's RPNHead (same parameter names), its 3x3 conv ``conv_channels`` wide (None: in_channels)."""
    head = RPNHead(in_channels, num_anchors)
    width = conv_channels or in_channels
    if width != in_channels:
        head.conv = nn.Sequential(Conv2dNormActivation(in_channels, width, kernel_size=3, norm_layer=None))
        head.cls_logits = nn.Conv2d(width, num_anchors, kernel_size=1)
        head.bbox_pred = nn.Conv2d(width, num_anchors * 4, kernel_size=1)
        for layer in head.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)
    return head


class UnroundedAnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator (ratio-major order) with detectron2's base anchors: not rounded.

    detectron2's DefaultAnchorGenerator keeps ``[-w/2, -h/2, w/2, h/2]`` as computed; torchvision rounds
    each to a whole pixel (a 32-px anchor of ratio 0.5 is 45.25 px wide in detectron2, 46 in torchvision).
    """

    def generate_anchors(
        self,
        scales,
        aspect_ratios,
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),  # noqa: B008 (torchvision's signature)
    ) -> Tensor:
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        aspect_ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(aspect_ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)  # [R*S], ratio-major
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


class SingleLevelRoIPool(nn.Module):
    """RoIPool (max over rounded bins, caffe's ROIPooling) on one named feature map; same call as RoIAlign."""

    def __init__(self, featmap_name: str, output_size: int, spatial_scale: float):
        super().__init__()
        self.featmap_name = featmap_name
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        """features[name]: [B, C, h, w]; boxes: B x [R_i, 4] -> [N, C, S, S]."""
        return roi_pool(features[self.featmap_name], boxes, self.output_size, self.spatial_scale)


class AttributeHead(nn.Module):
    """bottom-up-attention's attribute predictor (test.prototxt ``cls_embedding`` .. ``attr_score``).

    The predicted class (argmax of the class logits, background included) is embedded (256), concatenated
    with the pooled RoI feature, then fc 512 + ReLU and ``num_attributes`` logits (400 + "no attribute").
    features [N, D], class_logits [N, C] -> attribute logits [N, A].
    """

    def __init__(
        self, in_dim: int, num_classes: int, num_attributes: int, *, embed_dim: int = 256, hidden_dim: int = 512
    ):
        super().__init__()
        self.cls_embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Linear(in_dim + embed_dim, hidden_dim)
        self.attr_score = nn.Linear(hidden_dim, num_attributes)

    def forward(self, features: Tensor, class_logits: Tensor) -> Tensor:
        emb = self.cls_embed(class_logits.argmax(dim=1))  # [N, E]
        hidden = torch.relu(self.fc(torch.cat([features, emb], dim=1)))  # [N, D+E] -> [N, H]
        return self.attr_score(hidden)  # [N, A]
