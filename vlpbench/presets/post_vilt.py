"""The architectures after ViLT that the taxonomy has to place: ALBEF and VLMo.

* ALBEF-base (Li et al., NeurIPS 2021, "Align before Fuse: Vision and Language Representation Learning with
  Momentum Distillation"; salesforce/ALBEF ``configs/*.yaml``, ``config_bert.json``): ViT-B/16 image
  encoder (12 layers; 224x224 in pre-training, 384x384 in fine-tuning with the positions interpolated
  to 24x24), BERT-base layers 0-5 as the text encoder and 6-11 with cross-attention as the fusion
  encoder, ITC projections to 256 with a learnable temperature (0.07).  Two configurations of one
  model: ``albef-base`` (the fused ITM path) and ``albef-base-itc`` (the contrastive path that retrieves
  without the fusion layers).
* VLMo-base (Bao et al., NeurIPS 2022, "VLMo: Unified Vision-Language Pre-Training with
  Mixture-of-Modality-Experts"; microsoft/unilm ``vlmo``): 12 MoME blocks of width 768, the VL expert in
  the top 2; ``vlmo-base`` (fusion mode) and ``vlmo-base-dual`` (dual-encoder mode).

Both are measured at 384x384 (their retrieval fine-tuning resolution; VLMo fine-tunes VQA at 480) and
with 40 text tokens, as ViLT-B/32.  ``paper=`` holds reference facts from the two papers; neither paper
places itself in the ViLT taxonomy, so ``class`` is absent and the presets carry the tag
``post-vilt``: their class is only the measured one.
"""

from __future__ import annotations

from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.architectures.cross_attention import CrossAttentionConfig, CrossAttentionInteraction
from vlpbench.architectures.vlmo import MoMEConfig, MoMEInteraction
from vlpbench.embedders.patch import PatchEmbedConfig, PatchEmbedder
from vlpbench.registry import ARCH, INTERACTION, VISUAL

POST_VILT_TAG = "post-vilt"  # not placed by the ViLT paper: no paper class
_TINY_PATCH = dict(image_size=(32, 32), patch_size=16, dim=32, pos_grid=(2, 2))

# -- visual embedders: the ViT-B/16 stem (Conv2d 16/16 with bias, class token, positions) -------------------
VISUAL.register(
    "vit-b16-patch",
    PatchEmbedder.from_config,
    PatchEmbedConfig(
        image_size=(224, 224),
        patch_size=16,
        dim=768,
        pos_grid=(14, 14),
        pos_interp="none",
        conv_bias=True,
        max_image_len=-1,
    ),
    description="ViT-B/16 stem at 224 (ALBEF / VLMo pre-training): Conv2d 16/16 -> 768, class token, 14x14+1 positions",
    tiny=_TINY_PATCH,
    paper={"image_size": 224, "patch_size": 16, "tokens": "197"},
    tags=("patch", "vit"),
)
VISUAL.register(
    "vit-b16-patch-384",
    PatchEmbedder.from_config,
    PatchEmbedConfig(
        image_size=(384, 384),
        patch_size=16,
        dim=768,
        pos_grid=(24, 24),
        pos_interp="none",
        conv_bias=True,
        max_image_len=-1,
    ),
    description="ViT-B/16 stem at 384 (ALBEF / VLMo fine-tuning): positions stored interpolated to 24x24+1",
    tiny=_TINY_PATCH,
    paper={"image_size": 384, "patch_size": 16, "tokens": "577"},
    tags=("patch", "vit"),
)

# -- interactions -------------------------------------------------------------------------------------------
_TINY_XATTN = dict(width=32, heads=4, mlp_dim=64, image_layers=2, text_layers=1, fusion_layers=1, embed_dim=16)
_ALBEF_PAPER = {"model": "ALBEF-base", "image_layers": 12, "text_layers": 6, "fusion_layers": 6, "embed_dim": 256}
INTERACTION.register(
    "cross-attention",
    CrossAttentionInteraction.from_config,
    CrossAttentionConfig(path="itm"),
    description="ALBEF fusion: ViT image encoder (VE), BERT text encoder (TE), BERT layers with text->image "
    "cross-attention (MI); option path='itc': unimodal [CLS] projections to 256 and cosine / temperature",
    tiny=_TINY_XATTN,
    paper=_ALBEF_PAPER,
    tags=("albef", "fusion"),
)
_TINY_MOME = dict(width=32, depth=3, heads=4, mlp_dim=64, vl_layers=1, embed_dim=32)
_VLMO_PAPER = {"model": "VLMo-base", "depth": 12, "vl_layers": 2, "params_M": 175}
INTERACTION.register(
    "mome",
    MoMEInteraction.from_config,
    MoMEConfig(mode="fusion"),
    description="VLMo MoME: shared attention over [text; image], modality experts below, VL expert in the top 2; "
    "option mode='dual': image (VE) and text (TE) each through every block with its expert, cosine (MI)",
    tiny=_TINY_MOME,
    paper=_VLMO_PAPER,
    tags=("vlmo", "fusion"),
)

# -- architectures ------------------------------------------------------------------------------------------
_ALBEF_TEXT = {"max_len": 512, "text_len": 40}  # BERT-base's 512 positions; 40 tokens timed, as ViLT
_ALBEF_FACTS = {
    "params_M": 209.5,
    "image_encoder_params_M": 85.8,
    "text_fusion_params_M": 123.7,
    "vqa_test_dev": 75.84,
    "vqa_test_std": 76.04,
    "nlvr2_dev": 82.55,
    "nlvr2_test_p": 83.14,
    "coco_tr_r1": 77.6,
    "coco_ir_r1": 60.7,
    "flickr_tr_r1": 95.9,
    "flickr_ir_r1": 85.6,
    "pretraining_pairs": "14M",
    "input": "384x384 (pre-training 224x224)",
    "source": "Li et al., NeurIPS 2021 (ALBEF), Sec. 5 and Tables 2-4 (14M-pair model)",
    "note": "the 123.7M of BERT-base + cross-attention include BERT's pooler (0.59M), which ALBEF never runs "
    "and vlpbench does not build",
}
_VLMO_FACTS = {
    "params_M": 175,
    "vqa_test_dev": 76.64,
    "vqa_test_std": 76.89,
    "nlvr2_dev": 82.77,
    "nlvr2_test_p": 83.34,
    "coco_tr_r1": 74.8,
    "coco_ir_r1": 57.2,
    "flickr_tr_r1": 92.3,
    "flickr_ir_r1": 79.3,
    "pretraining_pairs": "4M",
    "input": "384x384 retrieval, 480x480 VQA (pre-training 224x224)",
    "source": "Bao et al., NeurIPS 2022 (VLMo), Tables 1-2 (VLMo-Base)",
    "note": "retrieval numbers are from the dual-encoder mode, VQA / NLVR2 from the fusion mode",
}


def _register(name, cfg: ArchConfig, description: str, paper: dict, **kwargs) -> None:
    ARCH.register(
        name,
        VLPModel.from_config,
        cfg,
        description=description,
        tiny={"tiny": True},
        paper=paper,
        tags=(POST_VILT_TAG,) + kwargs.pop("tags", ()),
        **kwargs,
    )


_register(
    "albef-base",
    ArchConfig(
        visual="vit-b16-patch-384",
        text="bert-base-embed",
        interaction="cross-attention",
        head="itm",
        text_overrides=_ALBEF_TEXT,
    ),
    "ALBEF-base, fused ITM path: ViT-B/16 at 384 (VE), 6 BERT layers (TE), 6 cross-attention layers (MI), ITM head",
    _ALBEF_FACTS,
    aliases=("albef",),
    tags=("albef",),
)
_register(
    "albef-base-itc",
    ArchConfig(
        visual="vit-b16-patch-384",
        text="bert-base-embed",
        interaction="cross-attention",
        head="itc",
        text_overrides=_ALBEF_TEXT,
        interaction_overrides={"path": "itc"},
    ),
    "ALBEF-base, ITC path: the same model's unimodal encoders, [CLS] projections to 256, cosine / temperature",
    _ALBEF_FACTS,
    aliases=("albef-itc",),
    tags=("albef",),
)
_register(
    "vlmo-base",
    ArchConfig(visual="vit-b16-patch-384", text="bert-base-embed", interaction="mome", head="itm"),
    "VLMo-base, fusion mode: 12 MoME blocks over [text; image] (VL expert in the top 2), ITM head",
    _VLMO_FACTS,
    aliases=("vlmo",),
    tags=("vlmo",),
)
_register(
    "vlmo-base-dual",
    ArchConfig(
        visual="vit-b16-patch-384",
        text="bert-base-embed",
        interaction="mome",
        head="itc",
        interaction_overrides={"mode": "dual"},
    ),
    "VLMo-base, dual-encoder mode: image and text each through the 12 blocks with their expert, ITC",
    _VLMO_FACTS,
    aliases=("vlmo-dual",),
    tags=("vlmo",),
)
