"""CNN-family presets: grid features (Pixel-BERT), CLIP RN50, BiGRU text, VSE-infinity GPO, ViLBERT
co-attention.

Sizes from the ViLT paper (Table 6) and the repositories named per preset (docs/reference.md sections 3-5).
``paper=`` values are reference facts for report columns (labelled paper values, never measured ones).
``tiny=`` keeps every structural feature (bottlenecks, anti-aliased strides, attention pool, packed BiGRU, GPO,
the ViLBERT layer schedule) at a seconds-fast size.
"""

from __future__ import annotations

from vlpbench.architectures.co_attention import CoAttentionConfig, CoAttentionInteraction
from vlpbench.architectures.vse import VSEConfig, VSEInteraction
from vlpbench.embedders.clip_resnet import ClipResNetConfig, ClipResNetEmbedder
from vlpbench.embedders.grid import GridConfig, GridEmbedder
from vlpbench.embedders.gru_text import GRUTextConfig, GRUTextEmbedder
from vlpbench.registry import INTERACTION, TEXT, VISUAL

_TINY_GRID = dict(blocks=(1, 1, 1, 1), width_per_group=16, image_size=(64, 96))

# -- visual embedders ----------------------------------------------------------------------------
VISUAL.register(
    "pixelbert-r50-grid",
    GridEmbedder.from_config,
    # 2x2 max-pool of the 25x42 C5 map -> 12x21 = 252 tokens, the ~260 image tokens of ViLT Table 6
    GridConfig(depth=50, image_size=(800, 1333), pool=2),
    description="Pixel-BERT-R50 grid features: ResNet-50 C5 at 800x1333 (25x42) max-pooled 2x2 to 12x21 = 252 "
    "tokens x 2048 (Table 6: 260); sample_tokens=100 gives the pre-training pixel sampling; "
    "channels_last=True the faster CPU layout",
    tiny=dict(_TINY_GRID),
    paper={
        "model": "Pixel-BERT-R50",
        "image_size": [800, 1333],
        "visual_time_ms": 45,
        "total_time_ms": 60,
        "params_M": 94.9,
        "flops_G": 136.8,
        "tokens": "260+?",
        "backbone_params_M": 25,
        "sample_tokens_pretraining": 100,
        "nlvr2_test_p": 72.4,
        "vqav2_test_dev": 71.35,
    },
    tags=("grid", "pixelbert", "cnn"),
)
VISUAL.register(
    "grid-r50",
    GridEmbedder.from_config,
    GridConfig(depth=50, image_size=(224, 224)),
    description="ResNet-50 C5 grid features at ImageNet size 224x224 (7x7 = 49 tokens x 2048)",
    tiny=dict(_TINY_GRID),
    paper={"backbone_params_M": 25},
    tags=("grid", "cnn"),
)
VISUAL.register(
    "grid-r101",
    GridEmbedder.from_config,
    GridConfig(depth=101, image_size=(800, 1333)),
    description="ResNet-101 C5 grid features at 800x1333 (25x42 = 1050 tokens x 2048)",
    tiny=dict(_TINY_GRID),
    paper={"backbone_params_M": 44, "image_size": [800, 1333]},
    tags=("grid", "cnn"),
)
VISUAL.register(
    "clip-rn50-visual",
    ClipResNetEmbedder.from_config,
    ClipResNetConfig(layers=(3, 4, 6, 3), width=64, heads=32, output_dim=1024, image_size=224),
    description="CLIP ModifiedResNet-50 image tower: 3-conv stem, anti-aliased strides, attention pool -> 1024",
    tiny=dict(layers=(1, 1, 1, 1), width=8, heads=2, output_dim=32, image_size=64),
    paper={
        "model": "CLIP RN50",
        "params_M": 102.01,
        "gflops": 18.18,
        "embed_dim": 1024,
        "zero_shot_imagenet_openclip": 59.82,
    },
    tags=("grid", "clip", "cnn"),
)

# -- text embedders ------------------------------------------------------------------------------
TEXT.register(
    "bigru-text",
    GRUTextEmbedder.from_config,
    GRUTextConfig(vocab_size=30522, embed_dim=300, hidden=1024, num_layers=1, text_len=40),
    description="VSE-infinity BiGRU text encoder: 300-d word embedding, 1-layer BiGRU 1024, halves averaged",
    tiny=dict(vocab_size=1000, embed_dim=16, hidden=32, text_len=12),
    paper={"model": "VSE-infinity (BiGRU text)", "embed_dim": 1024},
    tags=("text", "vse", "rnn"),
)

# -- interactions --------------------------------------------------------------------------------
INTERACTION.register(
    "vse-gpo",
    VSEInteraction.from_config,
    VSEConfig(embed_dim=1024, visual_proj="linear", gpo_pe_dim=32, gpo_hidden=32, temperature=0.1),
    description="VSE-infinity: projection + GPO pooling per side (image under VE, text under TE), "
    "cosine similarity (MI)",
    tiny=dict(embed_dim=32),
    paper={
        "model": "VSE-infinity",
        "gpo_params_M_approx": 0.1,
        "embed_dim": 1024,
        "coco5k_r1_tr_ir_butd_region": [58.3, 42.4],
        "coco5k_r1_tr_ir_wsl_grid": [66.4, 51.6],
        "loss": "hinge triplet, hardest negatives (VSE++)",
    },
    tags=("vse", "dual"),
)
INTERACTION.register(
    "co-attention",
    CoAttentionInteraction.from_config,
    CoAttentionConfig(),
    description="ViLBERT two-stream co-attention: text 12x768 (0-5 alone), visual 6x1024, 6 connections at 1024",
    tiny=dict(
        text_hidden=32,
        text_layers=4,
        text_heads=2,
        text_mlp=64,
        visual_hidden=48,
        visual_layers=2,
        visual_heads=2,
        visual_mlp=48,
        bi_hidden=32,
        bi_heads=2,
        visual_co_ids=(0, 1),
        text_co_ids=(2, 3),
    ),
    paper={
        "model": "ViLBERT",
        "params_M": 274.3,
        "flops_G": 958.1,
        "time_ms": 900,
        "tokens": "36+36",
        "vqav2_test_dev": 70.55,
        "config": "bert_base_6layer_6conect.json",
    },
    tags=("vilbert", "fusion"),
)
