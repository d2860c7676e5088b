"""CLIP's dual-encoder interaction: two towers, then a scaled cosine similarity.

The towers are embedder work, not interaction, so they are timed in the VE / TE groups:
``image_tower`` (VE: the ViT layers over the patch tokens, ``ln_post`` on the class token,
``visual_projection``; or only a projection when the visual embedder already pools, as CLIP RN50's
attention pool does), ``text_proj`` (TE: projection of the pooled text vector; a masked mean over the
tokens first when the text embedder does not pool) and ``similarity`` (MI: normalise, dot product,
logit scale).  Weight names follow transformers' ``CLIPModel`` where it helps the loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.errors import bad_value
from vlpbench.layers import Encoder, attn_bias, init_std, init_transformer_weights
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput, TextTokens, TokenSpec, VisualTokens

from .common import check_tokens, make_interaction_inputs


@dataclass(frozen=True)
class DualEncoderConfig:
    width: int = 768  # image tower width (ViT-B/32)
    depth: int = 12  # image tower layers
    heads: int = 12  # image tower heads
    mlp_dim: int = 3072  # image tower MLP width
    act: str = "quick_gelu"  # OpenAI CLIP's activation
    eps: float = 1e-5  # LayerNorm eps
    embed_dim: int = 512  # joint embedding width
    logit_scale_init: float = math.log(1 / 0.07)  # learned temperature, stored as a log


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, T, D], mask [B, T] bool -> [B, D] mean over the real tokens."""
    m = mask.to(x.dtype)[..., None]  # [B, T, 1]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def first_or_mean(x: torch.Tensor, mask: torch.Tensor, has_cls: bool) -> torch.Tensor:
    """x [B, T, D] -> [B, D]: the summary token when the stream has one, else the mean of the real tokens."""
    return x[:, 0] if has_cls else masked_mean(x, mask)


def last_layer_first_token(blk: nn.Module, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
    """A pre-norm :class:`vlpbench.layers.Block` evaluated for the first token only: x [B, T, D] -> [B, D].

    Exactly ``blk(x)[:, 0]``: the first token's query attends to every key and value, but the output
    projection and the MLP run on one row instead of T.
    """
    attn, d = blk.attn, x.shape[-1]
    b, t, _ = x.shape
    h = blk.ln1(x)
    q = F.linear(h[:, :1], attn.qkv.weight[:d], attn.qkv.bias[:d] if attn.qkv.bias is not None else None)
    kv = F.linear(h, attn.qkv.weight[d:], attn.qkv.bias[d:] if attn.qkv.bias is not None else None)
    k, v = kv.chunk(2, dim=-1)
    q = q.view(b, 1, attn.num_heads, attn.head_dim).transpose(1, 2)  # [B, 1, D] -> [B, H, 1, Dh]
    k = k.view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)  # [B, T, D] -> [B, H, T, Dh]
    v = v.view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, H, 1, Dh]
    x0 = x[:, 0] + attn.proj(out.reshape(b, d))  # [B, H, 1, Dh] -> [B, D]
    return x0 + blk.mlp(blk.ln2(x0))


class DualEncoderInteraction(nn.Module):
    """(VisualTokens [N, ...], TextTokens [M, ...]) -> InteractionOutput(image_embeds [N, E], text_embeds [M, E]
    (unit norm), logits_per_image [N, M]), as transformers' ``CLIPModel``: N images and M texts in one call."""

    family = "dual"  # image and text towers pooled to embeddings, compared by cosine (taxonomy class b)

    def __init__(
        self,
        visual_spec: TokenSpec,
        text_spec: TokenSpec,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_dim: int = 3072,
        *,
        act: str = "quick_gelu",
        eps: float = 1e-5,
        embed_dim: int = 512,
        logit_scale_init: float = math.log(1 / 0.07),
    ):
        super().__init__()
        if width % heads:
            raise bad_value("width", width, f"a multiple of heads={heads}")
        self.visual_spec, self.text_spec = visual_spec, text_spec
        self.output_dim = embed_dim
        if visual_spec.pooled:
            pooled_dim = visual_spec.pooled_dim or visual_spec.dim
            self.visual_in = self.tower = self.ln_post = None
            self.visual_projection = (
                nn.Linear(pooled_dim, embed_dim, bias=False) if pooled_dim != embed_dim else nn.Identity()
            )
        else:
            self.visual_in = nn.Linear(visual_spec.dim, width) if visual_spec.dim != width else nn.Identity()
            self.tower = Encoder(width, depth, heads, mlp_dim, norm_first=True, act=act, eps=eps)
            self.ln_post = nn.LayerNorm(width, eps=eps)
            self.visual_projection = nn.Linear(width, embed_dim, bias=False)
        text_in = (text_spec.pooled_dim or text_spec.dim) if text_spec.pooled else text_spec.dim
        self.text_projection = (
            nn.Linear(text_in, embed_dim, bias=False) if text_in != embed_dim or not text_spec.pooled else nn.Identity()
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        init_transformer_weights(self, init_std(width))
        # OpenAI CLIP: projections N(0, in_width ** -0.5), so a unit-scale token maps to a unit-scale embedding
        for proj in (self.visual_projection, self.text_projection):
            if isinstance(proj, nn.Linear):
                nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    @classmethod
    def from_config(
        cls, cfg: DualEncoderConfig, *, visual_spec: TokenSpec, text_spec: TokenSpec
    ) -> DualEncoderInteraction:
        return cls(
            visual_spec,
            text_spec,
            cfg.width,
            cfg.depth,
            cfg.heads,
            cfg.mlp_dim,
            act=cfg.act,
            eps=cfg.eps,
            embed_dim=cfg.embed_dim,
            logit_scale_init=cfg.logit_scale_init,
        )

    def workload(self) -> dict[str, Any]:
        return {"visual_tokens": self.visual_spec.num_tokens, "text_tokens": self.text_spec.num_tokens}

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        return make_interaction_inputs(self.visual_spec, self.text_spec, batch_size, generator=generator, device=device)

    def encode_image(self, visual: VisualTokens) -> torch.Tensor:
        """-> [B, E] (not normalised)."""
        if self.tower is None:
            if visual.pooled is None:
                raise bad_value(
                    "VisualTokens.pooled", None, "a pooled [B, D] vector (the visual spec says pooled=True)"
                )
            return self.visual_projection(visual.pooled)
        x = self.visual_in(visual.features)
        attn_mask = attn_bias(visual.mask, x.dtype)
        if not self.visual_spec.has_cls:  # no class token: mean-pool the real tokens
            return self.visual_projection(self.ln_post(masked_mean(self.tower(x, attn_mask=attn_mask), visual.mask)))
        for blk in self.tower.layers[:-1]:
            x = blk(x, attn_mask=attn_mask)
        # CLIP reads only the class token, so the last layer computes only its row
        return self.visual_projection(self.ln_post(last_layer_first_token(self.tower.layers[-1], x, attn_mask)))

    def encode_text(self, text: TextTokens) -> torch.Tensor:
        """-> [B, E] (not normalised)."""
        if self.text_spec.pooled:
            if text.pooled is None:
                raise bad_value("TextTokens.pooled", None, "a pooled [B, D] vector (the text spec says pooled=True)")
            return self.text_projection(text.pooled)
        return self.text_projection(masked_mean(text.features, text.mask))

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor):
        """[N, E], [M, E] -> unit-norm [N, E], [M, E] and logits_per_image [N, M]."""
        image_embeds = F.normalize(image_embeds, dim=-1)
        text_embeds = F.normalize(text_embeds, dim=-1)
        return image_embeds, text_embeds, self.logit_scale.exp() * image_embeds @ text_embeds.t()

    def forward(self, visual: VisualTokens, text: TextTokens, stage: StageFn = null_stage) -> InteractionOutput:
        check_tokens(visual, text, self.visual_spec, self.text_spec, same_batch=False)
        with stage("image_tower", "VE"):
            image = self.encode_image(visual)
        with stage("text_proj", "TE"):
            txt = self.encode_text(text)
        with stage("similarity"):
            image, txt, logits = self.similarity(image, txt)
        return InteractionOutput(image_embeds=image, text_embeds=txt, logits_per_image=logits)
