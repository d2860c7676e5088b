"""ALBEF's interaction (Li et al., NeurIPS 2021, "Align before Fuse"; salesforce/ALBEF ``models/xbert.py``,
``models/vit.py``): deep unimodal encoders, then fusion layers whose text queries cross-attend to the image.

Three encoders, one per group:

* ``image_encoder`` (VE): pre-norm ViT layers over the visual tokens, then the ViT's final LayerNorm
  (ALBEF-base: ViT-B/16, 12 layers, LayerNorm eps 1e-6);
* ``text_encoder`` (TE): post-norm BERT layers over the text tokens alone (ALBEF: BERT-base layers 0-5);
* ``fusion`` (MI): post-norm BERT layers 6-11, each self-attention over the text, then cross-attention
  from the text queries to the image tokens' keys and values, then the MLP (``CrossAttentionBlock``).

Two paths through the same weights, chosen by ``path``:

* ``"itm"``: the fused path of ALBEF's image-text matching and VQA / NLVR2 fine-tuning.  The output is the
  fused text sequence (``last_hidden_state`` [B, L, W]) and its [CLS] row (``pooler_output``: ALBEF has
  no pooler layer; its ITM head reads the [CLS] output directly).
* ``"itc"``: the image-text contrastive path that makes ALBEF retrieve cheaply: the unimodal [CLS]
  embeddings projected to ``embed_dim`` (256) inside their encoders' stages (as CLIP's projections,
  :mod:`architectures.dual_encoder`), then ``similarity`` (MI): normalise, dot product, divided by the
  learnable temperature (0.07 at initialisation).  The fusion layers are held but not run: it is one
  model, so its parameter count is the same on both paths.

Any visual and text embedder can feed it: tokens of another width are projected by a Linear, region
features (``TokenSpec.has_boxes``) get UNITER's 7-d box location through a Linear, added to the
projected feature, and a stream without a summary token (``has_cls=False``) is mean-pooled over its
real tokens.  With ``image_layers=0`` / ``text_layers=0`` the embedder's tokens go straight to the
fusion layers (its own encoder is then the unimodal encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.errors import bad_value
from vlpbench.layers import Attention, Encoder, Mlp, attn_bias, init_std, init_transformer_weights
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput, TextTokens, TokenSpec, VisualTokens

from .common import box_features, check_tokens, make_interaction_inputs
from .dual_encoder import first_or_mean, last_layer_first_token

PATHS = ("itm", "itc")


@dataclass(frozen=True)
class CrossAttentionConfig:
    width: int = 768  # width of every encoder (ViT-B and BERT-base)
    heads: int = 12  # attention heads (self and cross)
    mlp_dim: int = 3072  # MLP hidden width
    image_layers: int = 12  # pre-norm ViT layers over the visual tokens (VE); 0 = the embedder's tokens
    image_eps: float = 1e-6  # LayerNorm eps of the ViT layers and final norm (ALBEF models/vit.py)
    text_layers: int = 6  # post-norm BERT layers over the text alone (TE); ALBEF: layers 0-5
    fusion_layers: int = 6  # BERT layers with cross-attention to the image (MI); ALBEF: layers 6-11
    eps: float = 1e-12  # BERT LayerNorm eps
    act: str = "gelu"  # MLP activation
    embed_dim: int = 256  # ITC projection width
    temp_init: float = 0.07  # ITC temperature at initialisation (learnable; logits = sim / temp)
    path: str = "itm"  # "itm": fused path; "itc": unimodal [CLS] projections and similarity


class CrossAttentionBlock(nn.Module):
    """A BERT layer with cross-attention (ALBEF ``BertLayer`` at ``layer_num >= fusion_layer``; the layout of
    transformers' ``BertLayer(add_cross_attention=True)``), post-norm:

        x = ln1(x + self_attn(x));  x = ln_cross(x + cross_attn(x, image));  x = ln2(x + mlp(x))

    x [B, L, W], context [B, N, Wc] -> [B, L, W].
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        context_dim: int | None = None,
        eps: float = 1e-12,
        act: str = "gelu",
    ):
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.cross = Attention(dim, num_heads, kv_dim=context_dim or dim)
        self.ln_cross = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act=act)
        self.ln2 = nn.LayerNorm(dim, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, attn_mask=attn_mask))
        x = self.ln_cross(x + self.cross(x, context=context, attn_mask=context_mask))  # text queries, image keys
        return self.ln2(x + self.mlp(x))


class CrossAttentionInteraction(nn.Module):
    """(VisualTokens [B, N, Dv], TextTokens [B, L, Dt]) -> InteractionOutput.

    ``path="itm"``: last_hidden_state [B, L, W] (fused text), pooler_output [B, W] (its [CLS]), text_len L.
    ``path="itc"``: image_embeds [B, E], text_embeds [B, E] (unit norm), logits_per_image [B, B].
    """

    def __init__(self, visual_spec: TokenSpec, text_spec: TokenSpec, cfg: CrossAttentionConfig):
        super().__init__()
        if cfg.path not in PATHS:
            raise bad_value("path", cfg.path, PATHS)
        if cfg.width % cfg.heads:
            raise bad_value("width", cfg.width, f"a multiple of heads={cfg.heads}")
        for name in ("image_layers", "text_layers", "fusion_layers"):
            if getattr(cfg, name) < 0:
                raise bad_value(name, getattr(cfg, name), "an integer >= 0")
        if cfg.fusion_layers < 1:
            raise bad_value("fusion_layers", cfg.fusion_layers, "an integer >= 1 (the cross-attention layers)")
        if cfg.temp_init <= 0:
            raise bad_value("temp_init", cfg.temp_init, "a positive temperature")
        self.cfg, self.visual_spec, self.text_spec = cfg, visual_spec, text_spec
        self.path = cfg.path
        self.output_dim = cfg.embed_dim if cfg.path == "itc" else cfg.width
        w = cfg.width
        self.visual_in = nn.Linear(visual_spec.dim, w) if visual_spec.dim != w else nn.Identity()
        self.box_proj = nn.Linear(7, w) if visual_spec.has_boxes else None
        self.text_in = nn.Linear(text_spec.dim, w) if text_spec.dim != w else nn.Identity()
        block = dict(act=cfg.act)
        self.image_encoder = (
            Encoder(w, cfg.image_layers, cfg.heads, cfg.mlp_dim, norm_first=True, eps=cfg.image_eps, **block)
            if cfg.image_layers
            else None
        )
        self.image_norm = nn.LayerNorm(w, eps=cfg.image_eps) if cfg.image_layers else None
        self.text_encoder = (
            Encoder(w, cfg.text_layers, cfg.heads, cfg.mlp_dim, norm_first=False, eps=cfg.eps, **block)
            if cfg.text_layers
            else None
        )
        self.fusion = nn.ModuleList(
            CrossAttentionBlock(w, cfg.heads, cfg.mlp_dim, eps=cfg.eps, **block) for _ in range(cfg.fusion_layers)
        )
        self.vision_proj = nn.Linear(w, cfg.embed_dim)
        self.text_proj = nn.Linear(w, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temp_init)))
        init_transformer_weights(self, init_std(w))  # ALBEF: BERT's init for the text side, ViT's trunc-normal

    @property
    def family(self) -> str:
        """The ITC path compares unimodal embeddings (dual); the ITM path fuses them with cross-attention."""
        return "dual" if self.path == "itc" else "fusion"

    @classmethod
    def from_config(
        cls, cfg: CrossAttentionConfig, *, visual_spec: TokenSpec, text_spec: TokenSpec
    ) -> CrossAttentionInteraction:
        return cls(visual_spec, text_spec, cfg)

    def workload(self) -> dict[str, Any]:
        return {
            "visual_tokens": self.visual_spec.num_tokens,
            "text_tokens": self.text_spec.num_tokens,
            "path": self.path,
        }

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        return make_interaction_inputs(self.visual_spec, self.text_spec, batch_size, generator=generator, device=device)

    # -- the three encoders ------------------------------------------------------------------------------------
    def embed_image(self, visual: VisualTokens) -> torch.Tensor:
        """-> [B, N, W]: projected tokens (+ box location)."""
        v = self.visual_in(visual.features)
        if self.box_proj is not None:
            v = v + self.box_proj(box_features(visual.boxes.to(v.dtype)))
        return v

    def encode_image(self, visual: VisualTokens) -> torch.Tensor:
        """-> [B, N, W] after the ViT layers and final LayerNorm."""
        v = self.embed_image(visual)
        if self.image_encoder is None:
            return v
        return self.image_norm(self.image_encoder(v, attn_mask=attn_bias(visual.mask, v.dtype)))

    def encode_image_cls(self, visual: VisualTokens) -> torch.Tensor:
        """-> [B, W], the image [CLS] (or mean) after the encoder; with a class token the last ViT layer
        runs for that row only (exactly ``encode_image(visual)[:, 0]``, as the CLIP tower does)."""
        if self.image_encoder is None or not self.visual_spec.has_cls:
            return first_or_mean(self.encode_image(visual), visual.mask, self.visual_spec.has_cls)
        v, bias = self.embed_image(visual), attn_bias(visual.mask, visual.features.dtype)
        for blk in self.image_encoder.layers[:-1]:
            v = blk(v, attn_mask=bias)
        return self.image_norm(last_layer_first_token(self.image_encoder.layers[-1], v, bias))

    def encode_text(self, text: TextTokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> [B, L, W] after the BERT layers, and the text's additive mask (None when all tokens are real)."""
        t = self.text_in(text.features)
        bias = attn_bias(text.mask, t.dtype)
        return (t if self.text_encoder is None else self.text_encoder(t, attn_mask=bias)), bias

    def fuse(
        self, t: torch.Tensor, t_bias: torch.Tensor | None, v: torch.Tensor, v_bias: torch.Tensor | None
    ) -> torch.Tensor:
        """text [B, L, W], image [B, N, W] -> fused text [B, L, W]."""
        for layer in self.fusion:
            t = layer(t, v, attn_mask=t_bias, context_mask=v_bias)
        return t

    def similarity(self, image: torch.Tensor, text: torch.Tensor):
        """[B, E], [B, E] -> unit-norm [B, E], [B, E] and logits_per_image [B, B] = sim / temp."""
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return image, text, image @ text.t() / self.temp

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, visual: VisualTokens, text: TextTokens, stage: StageFn = null_stage) -> InteractionOutput:
        check_tokens(visual, text, self.visual_spec, self.text_spec)
        return self._itc(visual, text, stage) if self.path == "itc" else self._itm(visual, text, stage)

    def _itm(self, visual: VisualTokens, text: TextTokens, stage: StageFn) -> InteractionOutput:
        with stage("image_encoder", "VE"):
            v = self.encode_image(visual)
        with stage("text_encoder", "TE"):
            t, t_bias = self.encode_text(text)
        with stage("fusion"):
            x = self.fuse(t, t_bias, v, attn_bias(visual.mask, v.dtype))
            pooled = first_or_mean(x, text.mask, self.text_spec.has_cls)
        return InteractionOutput(last_hidden_state=x, pooler_output=pooled, text_len=x.shape[1])

    def _itc(self, visual: VisualTokens, text: TextTokens, stage: StageFn) -> InteractionOutput:
        with stage("image_encoder", "VE"):
            image = self.vision_proj(self.encode_image_cls(visual))
        with stage("text_encoder", "TE"):
            t, _ = self.encode_text(text)
            txt = self.text_proj(first_or_mean(t, text.mask, self.text_spec.has_cls))
        with stage("similarity"):
            image, txt, logits = self.similarity(image, txt)
        return InteractionOutput(image_embeds=image, text_embeds=txt, logits_per_image=logits)
