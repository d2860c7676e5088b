"""Transformer-family presets: patch projection, BERT / CLIP text embedders, single-stream and dual-encoder.

Sizes from the repositories (ViLT-B/32: dandelin/ViLT vilt/config.py; CLIP ViT-B/32: OpenCLIP ViT-B-32.json;
docs/reference.md section 5).  ``paper=`` values are reference facts for report columns, never measured values.
``tiny=`` keeps every structural feature (interpolated positions, ln_pre, causal text tower, projections).
"""

from __future__ import annotations

from vlpbench.architectures.dual_encoder import DualEncoderConfig, DualEncoderInteraction
from vlpbench.architectures.single_stream import SingleStreamConfig, SingleStreamInteraction
from vlpbench.embedders.patch import PatchEmbedConfig, PatchEmbedder
from vlpbench.embedders.text import BertEmbedConfig, BertEmbedder, ClipTextConfig, ClipTextEmbedder
from vlpbench.registry import INTERACTION, TEXT, VISUAL

_TINY_BLOCK = dict(depth=2, heads=4, mlp_dim=64)

VISUAL.register(
    "vilt-b32-patch",
    PatchEmbedder.from_config,
    PatchEmbedConfig(
        image_size=(384, 640),
        patch_size=32,
        dim=768,
        pos_grid=(12, 12),
        pos_interp="bilinear",
        conv_bias=True,
        max_image_len=-1,
    ),
    description="ViLT patch projection: Conv2d 32/32 -> 768, class token, 12x12 positions interpolated to 12x20",
    tiny=dict(image_size=(64, 96), patch_size=16, dim=32, pos_grid=(3, 3)),
    paper={
        "params_M": 2.4,
        "time_ms": 0.4,
        "max_image_len_pretraining": 200,
        "note": "ViLT resizes to shorter 384 / longer <= 639, rounded down to 32 (a 5:8 image: 384x608, "
        "12x19); vilt_resize_shape() gives it; this preset times 384x640 (12x20) as the paper's figure",
    },
    tags=("patch", "vilt"),
)
VISUAL.register(
    "clip-vit-b32-patch",
    PatchEmbedder.from_config,
    PatchEmbedConfig(
        image_size=(224, 224),
        patch_size=32,
        dim=768,
        pos_grid=(7, 7),
        pos_interp="none",
        conv_bias=False,
        pre_norm=True,
        norm_eps=1e-5,
        max_image_len=-1,
    ),
    description="CLIP ViT-B/32 stem: Conv2d 32/32 (no bias) -> 768, class embedding, 7x7+1 positions, ln_pre",
    tiny=dict(image_size=(64, 64), patch_size=16, dim=32, pos_grid=(4, 4)),
    paper={"image_size": 224, "patch_size": 32},
    tags=("patch", "clip"),
)
TEXT.register(
    "bert-base-embed",
    BertEmbedder.from_config,
    BertEmbedConfig(vocab_size=30522, dim=768, max_len=40, text_len=40, type_vocab_size=2, eps=1e-12),
    description="BERT word + position + token-type embeddings and LayerNorm (ViLT: 40 positions)",
    tiny=dict(vocab_size=1000, dim=32, max_len=16, text_len=16),
    paper={"word_table_params_M": 23.47, "max_text_len": 40},
    tags=("text", "bert", "vilt"),
)
TEXT.register(
    "clip-text-b32",
    ClipTextEmbedder.from_config,
    ClipTextConfig(
        vocab_size=49408,
        dim=512,
        depth=12,
        heads=8,
        mlp_dim=2048,
        act="quick_gelu",
        context_len=77,
        text_len=77,
        proj_dim=512,
        eot_token_id=49407,
        pool="argmax",
    ),
    description="CLIP text transformer: 12 causal pre-norm layers x 512, 8 heads, EOT pooling, projection 512",
    tiny=dict(vocab_size=1000, dim=32, context_len=16, text_len=16, proj_dim=32, eot_token_id=999, **_TINY_BLOCK),
    paper={"params_M": 63.43, "context": 77, "vocab": 49408},
    tags=("text", "clip"),
)
INTERACTION.register(
    "single-stream",
    SingleStreamInteraction.from_config,
    SingleStreamConfig(width=768, depth=12, heads=12, mlp_dim=3072, act="gelu", eps=1e-12, modality_types=2),
    description="ViLT single-stream transformer: modality-type embeddings, [text; image] through 12 pre-norm layers",
    tiny=dict(width=32, **_TINY_BLOCK),
    paper={"model": "ViLT-B/32", "params_M": 87.4, "flops_G": 55.9, "time_ms": 15, "tokens": "200+40"},
    tags=("vilt", "fusion"),
)
INTERACTION.register(
    "dual-encoder",
    DualEncoderInteraction.from_config,
    DualEncoderConfig(width=768, depth=12, heads=12, mlp_dim=3072, act="quick_gelu", eps=1e-5, embed_dim=512),
    description="CLIP dual encoder: ViT-B/32 image tower (VE) + projections, cosine similarity x learned scale (MI)",
    tiny=dict(width=32, embed_dim=32, **_TINY_BLOCK),
    paper={
        "model": "CLIP ViT-B/32",
        "params_M": 151.28,
        "image_params_M": 87.85,
        "text_params_M": 63.43,
        "gflops": 14.78,
        "embed_dim": 512,
    },
    tags=("clip", "dual"),
)
