"""Region-feature visual embedders (Faster R-CNN); reference numbers from the ViLT paper (Figure 1, Tables 6-7),
peteanderson80/bottom-up-attention and detectron2's MODEL_ZOO (docs/reference.md).

* ``butd-r101-c4``: bottom-up-attention (peteanderson80/bottom-up-attention), the region embedder behind
  ViLBERT, LXMERT and UNITER, built as its test network (``models/vg/ResNet-101/faster_rcnn_end2end_final/
  test.prototxt``): stride in the 1x1 convs, caffe pool1, a 512-wide RPN conv with 12 anchors (scales 4-32 at
  stride 16, ratios 0.5-2), RoIPool 14x14 at stride 1/16, res5 at stride 1 with 3x3s dilated 2 (so the head
  works on 14x14, about 5.9 GFLOPs per RoI), global average pool, 1601-way classes, 400+1 attributes; run at
  800x1333 as the ViLT paper timed it; ``butd-r101-c4-600`` at its own test size 600x1000.
* ``frcnn-r50-fpn``: torchvision's default COCO detector, fasterrcnn_resnet50_fpn.

Where ``butd-r101-c4`` still differs from the published network (also in its ``paper["differences"]``):
caffe's anchors come from py-faster-rcnn's generate_anchors (a 16-px base box, ``+1`` widths, rounded ratios);
ours are torchvision's centred anchors of the same sizes and ratios.  caffe decodes boxes with ``+1`` widths
and its RPN has a two-way softmax (the same function as our sigmoid of one logit: the checkpoint loader
converts).  caffe's RoIPool rounds RoI corners like torchvision.ops.roi_pool but clamps bins differently at
the border.  RPN NMS is one class-agnostic NMS at 0.7 in both.  Detection NMS follows generate_tsv.py: per class,
over every RoI, on the RoI (proposal) boxes, no score pre-filter (``nms_prefilter=True`` is detectron2's way).

``tiny`` keeps each structure (C4 res5 head / FPN TwoMLPHead, all NMS stages) on a ResNet-18 at 128x192; a
ResNet-18 has no 1x1 convs, so its stride stays in the 3x3 there.
"""

from __future__ import annotations

import dataclasses

from vlpbench.embedders.region import RegionEmbedderConfig, build_region_embedder
from vlpbench.registry import VISUAL

_BUTD = RegionEmbedderConfig(
    arch="c4",
    depth=101,
    image_size=(800, 1333),
    pixel_mean=(102.9801, 115.9465, 122.7717),  # caffe means, in BGR order (applied after the flip)
    pixel_std=(1.0, 1.0, 1.0),
    input_scale=255.0,
    bgr=True,
    size_divisible=0,
    anchor_sizes=((64, 128, 256, 512),),  # scales 4, 8, 16, 32 at stride 16
    aspect_ratios=(0.5, 1.0, 2.0),
    rpn_pre_nms_top_n=6000,
    rpn_post_nms_top_n=300,
    rpn_nms_thresh=0.7,
    pooler_resolution=14,
    pooler_sampling_ratio=0,
    num_classes=1601,
    nms_mode="per-class",
    det_nms_thresh=0.3,
    score_thresh=0.2,
    detections_per_img=100,
    num_regions=36,
    fill_to_k=True,
    region_boxes="proposal",
    stride_in_1x1=True,  # res3a_branch2a: stride 2 in the 1x1, branch2b stride 1
    res5_dilation=2,  # res5a_branch1/2a stride 1, every res5 3x3 dilation 2
    pool1="caffe",  # pool1: kernel 3, stride 2, no pad (caffe rounds up)
    rpn_conv_channels=512,  # rpn_conv/3x3: num_output 512
    roi_pooler="pool",  # roi_pool5: ROIPooling 14x14, spatial_scale 1/16
    attribute_classes=401,  # attr_score: num_output 401 (400 + no attribute)
    det_nms_boxes="proposal",  # generate_tsv.py suppresses the RoI boxes
)

_BUTD_TINY = dict(
    depth=18,
    image_size=(128, 192),
    rpn_pre_nms_top_n=300,
    rpn_post_nms_top_n=20,
    num_classes=81,
    pooler_resolution=8,  # the res5 head on 14x14 RoIs dominates test time; 8x8 keeps its structure
    num_regions=10,
    stride_in_1x1=False,
    rpn_conv_channels=64,
    attribute_classes=11,
)

_BUTD_PAPER = {
    "source": "peteanderson80/bottom-up-attention [repo]; ViLT paper Fig. 1, Tables 6-7 [paper]",
    "classes": "1600 Visual Genome objects + background, 400 attributes",
    "test_size": [600, 1000],
    "vilt_timed_size": [800, 1333],
    "rpn": "6000 pre-NMS, 300 post-NMS, IoU 0.7",
    "roi": "RoI pooling 14x14 at stride 16, res5, mean-pooled 2048-d",
    "det_nms": "per-class 0.3 over all classes, confidence 0.2, 10-100 boxes or 36 fixed",
    "region_pipeline_ms_vilt_fig1": {"backbone_r101": 75, "rpn_roialign_nms_roiheads": 810, "total_uniter": 900},
    "per_class_nms_ms_note": "> 500 ms for 1,600 classes (ViLT Table 6 note)",
    "detectron2_r101_c4_v100_s_per_image": 0.139,
    "res5_head_gflops_per_roi": "~5.9 (stride 1, dilation 2, 14x14; from the test.prototxt layer shapes)",
    "differences": "anchors (py-faster-rcnn's +1 convention vs centred), box decoding +1 widths, RoIPool border "
    "clamping; see vlpbench.presets.region",
}

VISUAL.register(
    "butd-r101-c4",
    build_region_embedder,
    _BUTD,
    description="bottom-up-attention Faster R-CNN R101-C4 (VG 1600 classes), 36 regions of 2048-d, 800x1333",
    tiny=_BUTD_TINY,
    paper=_BUTD_PAPER,
    tags=("region", "c4"),
)
VISUAL.register(
    "butd-r101-c4-600",
    build_region_embedder,
    dataclasses.replace(_BUTD, image_size=(600, 1000)),
    description="bottom-up-attention Faster R-CNN R101-C4 at its own test size 600x1000",
    tiny=_BUTD_TINY,
    paper=_BUTD_PAPER,
    tags=("region", "c4"),
)

VISUAL.register(
    "frcnn-r50-fpn",
    build_region_embedder,
    RegionEmbedderConfig(
        arch="fpn",
        depth=50,
        image_size=(800, 1333),
        num_classes=91,
        rpn_pre_nms_top_n=1000,
        rpn_post_nms_top_n=1000,
        rpn_nms_thresh=0.7,
        pooler_resolution=7,
        pooler_sampling_ratio=2,
        representation_size=1024,
        nms_mode="batched",
        det_nms_thresh=0.5,
        score_thresh=0.05,
        detections_per_img=100,
        num_regions=36,
        fill_to_k=True,
        region_boxes="detection",
    ),
    description="torchvision fasterrcnn_resnet50_fpn (COCO 91 classes), 36 regions of its 1024-d box-head output",
    tiny=dict(
        depth=18,
        image_size=(128, 192),
        rpn_pre_nms_top_n=200,
        rpn_post_nms_top_n=50,
        representation_size=128,
        num_regions=10,
    ),
    paper={
        "source": "torchvision fasterrcnn_resnet50_fpn defaults [repo]; detectron2 MODEL_ZOO.md [repo]",
        "v100_s_per_it_torchvision": 0.0590,
        "detectron2_r50_fpn_v100_s_per_image": 0.038,
    },
    tags=("region", "fpn"),
)
