"""Architecture presets: (visual embedder, text embedder, interaction) combinations from the papers.

``paper=`` holds reference facts quoted from the papers (ViLT paper Figures 1-2 and Tables 2, 4, 6; see
docs/reference.md), used as the "paper" columns of reports and never returned as measurements: ``class`` is the
ViLT taxonomy class the paper assigns, ``time_ms`` the
paper's running time (Table 6 / Figure 1; P40 GPU + Xeon CPU), ``params_M`` / ``flops_G`` Table 6 counts
(word-embedding table excluded), and accuracy figures (VQAv2 test-dev, NLVR2 test-P, COCO 5K and Flickr30k 1K
R@1 after fine-tuning, zero-shot ImageNet top-1), each with its citation in ``cite``.

Where a preset departs from the original model, ``note`` says how.
"""

from __future__ import annotations

from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.registry import ARCH

_BERT_512 = {"max_len": 512}  # BERT-base text embeddings carry 512 positions (ViLT keeps 40)
# citation keys of the accuracy facts: kim2021vilt = Kim, Son & Kim, "ViLT", ICML 2021 (arXiv 2102.03334);
# chen2021vseinfty = Chen et al., "Learning the Best Pooling Strategy for Visual Semantic Embedding", CVPR 2021;
# openclip-results = mlfoundations/open_clip, docs/openclip_results.csv (re-evaluation of OpenAI's weights)


def _cite(key: str, **where: str) -> dict:
    """{fact: "key, where"}: the paper (citation key) and table each accuracy fact is quoted from."""
    return {fact: f"{key}, {place}" for fact, place in where.items()}


def _register(name, builder, config, **kwargs):
    # the tiny variant builds every component at its own tiny size
    return ARCH.register(name, builder, config, tiny={"tiny": True}, **kwargs)


_register(
    "vilt-b32",
    VLPModel.from_config,
    ArchConfig(visual="vilt-b32-patch", text="bert-base-embed", interaction="single-stream"),
    description="ViLT-B/32: linear patch projection + BERT embeddings -> 12-layer single-stream transformer",
    aliases=("vilt",),
    tags=("hf:vilt",),  # --weights loads a transformers ViLT checkpoint
    paper={
        "class": "d",
        "time_ms": 15,
        "params_M": 87.4,
        "flops_G": 55.9,
        "tokens": "200+40",
        "vqa_test_dev": 71.26,
        "nlvr2_test_p": 76.13,
        "coco_tr_r1": 61.5,
        "coco_ir_r1": 42.7,
        "flickr_tr_r1": 83.5,
        "flickr_ir_r1": 64.4,
        "cite": _cite(
            "kim2021vilt",
            vqa_test_dev="Table 2",
            nlvr2_test_p="Table 2",
            coco_tr_r1="Table 4",
            coco_ir_r1="Table 4",
            flickr_tr_r1="Table 4",
            flickr_ir_r1="Table 4",
        ),
        "input": "384x640",
        "source": "ViLT Tables 2, 4, 6",
    },
)
_register(
    "clip-vit-b32",
    VLPModel.from_config,
    ArchConfig(visual="clip-vit-b32-patch", text="clip-text-b32", interaction="dual-encoder"),
    description="CLIP ViT-B/32: ViT image tower and causal text transformer, cosine similarity of projections",
    aliases=("clip",),
    tags=("hf:clip",),  # --weights loads a transformers CLIP checkpoint
    paper={
        "class": "b",
        "params_M": 151.28,
        "flops_G": 14.78,
        "imagenet_zero_shot": 63.32,
        "input": "224x224",
        "cite": _cite("openclip-results", imagenet_zero_shot="ViT-B-32 openai, zero-shot ImageNet-1k top-1"),
        "source": "OpenCLIP model_profile.csv; ViLT Figure 2",
    },
)
_register(
    "clip-rn50",
    VLPModel.from_config,
    ArchConfig(
        visual="clip-rn50-visual",
        text="clip-text-b32",
        interaction="dual-encoder",
        text_overrides={"proj_dim": 1024},
        interaction_overrides={"embed_dim": 1024},
    ),
    description="CLIP RN50: modified ResNet-50 with attention pooling, CLIP text transformer, 1024-d embedding",
    paper={
        "class": "b",
        "params_M": 102.01,
        "flops_G": 18.18,
        "imagenet_zero_shot": 59.82,
        "input": "224x224",
        "cite": _cite("openclip-results", imagenet_zero_shot="RN50 openai, zero-shot ImageNet-1k top-1"),
        "source": "OpenCLIP model_profile.csv",
    },
)
_register(
    "vse-inf",
    VLPModel.from_config,
    ArchConfig(visual="butd-r101-c4", text="bigru-text", interaction="vse-gpo"),
    description="VSE-infinity: bottom-up-attention regions + BiGRU text, GPO pooling, cosine similarity",
    aliases=("vse",),
    paper={
        "class": "a",
        "time_ms": 900,
        "coco_tr_r1": 58.3,
        "coco_ir_r1": 42.4,
        "cite": _cite(
            "chen2021vseinfty",
            coco_tr_r1="woodfrog/vse_infty README, BUTD region, COCO 5K",
            coco_ir_r1="woodfrog/vse_infty README, BUTD region, COCO 5K",
        ),
        "source": "woodfrog/vse_infty (BUTD region); time as SCAN in ViLT Table 4",
        "note": "time is the ViLT paper's region-feature figure for SCAN, not measured for VSE-infinity",
    },
)
_register(
    "vilbert-base",
    VLPModel.from_config,
    ArchConfig(
        visual="butd-r101-c4",
        text="bert-base-embed",
        interaction="co-attention",
        text_overrides={**_BERT_512, "text_len": 36},
    ),
    description="ViLBERT: bottom-up-attention regions, two-stream co-attention (text 12x768, visual 6x1024)",
    aliases=("vilbert",),
    paper={
        "class": "c",
        "time_ms": 920,
        "params_M": 274.3,
        "flops_G": 958.1,
        "tokens": "36+36",
        "vqa_test_dev": 70.55,
        "cite": _cite("kim2021vilt", vqa_test_dev="Table 2"),
        "source": "ViLT Tables 2, 6",
    },
)
_register(
    "uniter-base",
    VLPModel.from_config,
    ArchConfig(
        visual="butd-r101-c4",
        text="bert-base-embed",
        interaction="single-stream",
        text_overrides={**_BERT_512, "text_len": 60},
    ),
    description="UNITER-Base: bottom-up-attention regions (+ box location) and BERT tokens, single-stream transformer",
    aliases=("uniter",),
    paper={
        "class": "c",
        "time_ms": 900,
        "params_M": 154.7,
        "flops_G": 949.9,
        "tokens": "36+60",
        "vqa_test_dev": 72.70,
        "nlvr2_test_p": 75.80,
        "coco_tr_r1": 64.4,
        "coco_ir_r1": 50.3,
        "flickr_tr_r1": 85.9,
        "flickr_ir_r1": 72.5,
        "cite": _cite(
            "kim2021vilt",
            vqa_test_dev="Table 2",
            nlvr2_test_p="Table 2",
            coco_tr_r1="Table 4",
            coco_ir_r1="Table 4",
            flickr_tr_r1="Table 4",
            flickr_ir_r1="Table 4",
        ),
        "source": "ViLT Tables 2, 4, 6",
        "note": "the single-stream layers are ViLT's pre-norm ViT layers (UNITER uses BERT's post-norm); "
        "same width, depth and cost",
    },
)
_register(
    "pixelbert-r50",
    VLPModel.from_config,
    ArchConfig(
        visual="pixelbert-r50-grid", text="bert-base-embed", interaction="single-stream", text_overrides=_BERT_512
    ),
    description="Pixel-BERT-R50: ResNet-50 grid features at 800x1333 and BERT tokens, single-stream transformer",
    aliases=("pixelbert",),
    paper={
        "class": "c",
        "time_ms": 60,
        "params_M": 94.9,
        "flops_G": 136.8,
        "tokens": "260+?",
        "vqa_test_dev": 71.35,
        "nlvr2_test_p": 72.4,
        "coco_tr_r1": 59.8,
        "coco_ir_r1": 41.1,
        "flickr_tr_r1": 75.7,
        "flickr_ir_r1": 53.4,
        "cite": _cite(
            "kim2021vilt",
            vqa_test_dev="Table 2",
            nlvr2_test_p="Table 2",
            coco_tr_r1="Table 4",
            coco_ir_r1="Table 4",
            flickr_tr_r1="Table 4",
            flickr_ir_r1="Table 4",
        ),
        "source": "ViLT Tables 2, 4, 6",
        "note": "all 25x42 grid positions are used at inference; pre-training sampled 100",
    },
)
