"""VLMo's mixture-of-modality-experts (MoME) transformer (Bao et al., NeurIPS 2022; microsoft/unilm
``vlmo/modules/multiway_transformer.py``).

Every block has one self-attention shared by both modalities and a choice of feed-forward experts, each
with its own LayerNorm: vision (V-FFN) and language (L-FFN) in every block, and a vision-language expert
(VL-FFN) in the top ``vl_layers`` blocks (VLMo-base: the last 2 of 12).  Blocks are pre-norm with BEiT's
layer scale (``gamma``, 0.1 at initialisation), then one final LayerNorm.  Routing is static, by
position, so every token's path and the FLOP count are fixed before the forward runs.

The same weights run in two modes (``mode``):

* ``"dual"`` (retrieval): the image tokens go through all blocks with the vision expert (``image_encoder``,
  VE), the text tokens through all blocks with the language expert (``text_encoder``, TE), each [CLS]
  after the final LayerNorm through its ITC projection (768 -> 768, no bias); ``similarity`` (MI) is the
  scaled cosine, logit scale learnable from log(1 / 0.07).  Output as CLIP's.
* ``"fusion"`` (VQA, NLVR2, ITM): ``fuse`` concatenates [text; image] with modality-type embeddings, and
  every block's attention spans the whole sequence; in the bottom blocks (``modality_layers``) text
  positions take the language expert and image positions the vision expert, in the top blocks
  (``vl_layers``) every position takes the VL expert; ``pooler`` is the final LayerNorm and VLMo's
  Linear + tanh on the text [CLS].  Since the attention of every block mixes the modalities, all four
  stages are interaction (MI): only the embedders run per modality.

Departures from the released code, none of which changes the cost: the shared attention keeps a bias on
k (VLMo has q and v biases only, 768 parameters per block fewer), positions are absolute (those of the
visual and text embedders), and the pre-training-only ITC projections for the VL-FFN features
(``itc_vl_*_proj``) are left out.

Any visual and text embedder can feed it: tokens of another width are projected by a Linear, region
features get the 7-d box location through a Linear, and a stream without a summary token is mean-pooled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.errors import bad_value
from vlpbench.layers import Attention, Mlp, attn_bias, init_std, init_transformer_weights
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput, TextTokens, TokenSpec, VisualTokens

from .common import box_features, check_tokens, make_interaction_inputs
from .dual_encoder import first_or_mean

MODES = ("fusion", "dual")
EXPERTS = ("vision", "language", "vl")


@dataclass(frozen=True)
class MoMEConfig:
    width: int = 768  # transformer width (VLMo-base)
    depth: int = 12  # blocks
    heads: int = 12  # shared attention heads
    mlp_dim: int = 3072  # hidden width of every expert
    vl_layers: int = 2  # top blocks that hold the VL expert (VLMo-base: 2; large: 3 of 24)
    eps: float = 1e-6  # LayerNorm eps (BEiT)
    act: str = "gelu"  # expert activation
    layer_scale: float = 0.1  # layer-scale init of each residual branch; 0 = no layer scale
    modality_types: int = 2  # modality-type embedding rows (0 text, 1 image)
    embed_dim: int = 768  # ITC projection width (VLMo: the hidden size)
    logit_scale_init: float = math.log(1 / 0.07)  # learnable ITC scale, stored as a log
    mode: str = "fusion"  # "fusion" (concatenated sequence) or "dual" (two encoders)


class MoMEBlock(nn.Module):
    """Shared pre-norm attention, then one feed-forward expert per token:

        x = x + g1 * attn(norm1(x));   x = x + g2 * experts[e](norms[e](x))

    ``forward(x, expert)`` routes every token to ``expert``; ``forward(x, split=L)`` routes the first L
    positions (the text) to the language expert and the rest to the vision expert.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        vl_expert: bool,
        eps: float = 1e-6,
        act: str = "gelu",
        layer_scale: float = 0.1,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        names = EXPERTS if vl_expert else EXPERTS[:2]
        self.norms = nn.ModuleDict({e: nn.LayerNorm(dim, eps=eps) for e in names})
        self.experts = nn.ModuleDict({e: Mlp(dim, mlp_dim, act=act) for e in names})
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale)) if layer_scale > 0 else None
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale)) if layer_scale > 0 else None

    def _ffn(self, x: torch.Tensor, expert: str) -> torch.Tensor:
        y = self.experts[expert](self.norms[expert](x))
        return x + (y if self.gamma2 is None else self.gamma2 * y)

    def forward(
        self,
        x: torch.Tensor,
        expert: str | None = None,
        attn_mask: torch.Tensor | None = None,
        split: int | None = None,
    ) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        y = self.attn(self.norm1(x), attn_mask=attn_mask)
        x = x + (y if self.gamma1 is None else self.gamma1 * y)
        if split is None:
            return self._ffn(x, expert)
        # static routing by position: [B, :L] text -> language expert, [B, L:] image -> vision expert
        return torch.cat([self._ffn(x[:, :split], "language"), self._ffn(x[:, split:], "vision")], dim=1)


class MoMEInteraction(nn.Module):
    """(VisualTokens [B, N, Dv], TextTokens [B, L, Dt]) -> InteractionOutput.

    ``mode="fusion"``: last_hidden_state [B, L + N, W], pooler_output [B, W], text_len L.
    ``mode="dual"``: image_embeds [B, E], text_embeds [B, E] (unit norm), logits_per_image [B, B].
    """

    def __init__(self, visual_spec: TokenSpec, text_spec: TokenSpec, cfg: MoMEConfig):
        super().__init__()
        if cfg.mode not in MODES:
            raise bad_value("mode", cfg.mode, MODES)
        if cfg.width % cfg.heads:
            raise bad_value("width", cfg.width, f"a multiple of heads={cfg.heads}")
        if cfg.depth < 1 or not 0 <= cfg.vl_layers <= cfg.depth:
            raise bad_value("(depth, vl_layers)", (cfg.depth, cfg.vl_layers), "depth >= 1 and 0 <= vl_layers <= depth")
        self.cfg, self.visual_spec, self.text_spec, self.mode = cfg, visual_spec, text_spec, cfg.mode
        self.output_dim = cfg.embed_dim if cfg.mode == "dual" else cfg.width
        w = cfg.width
        self.visual_in = nn.Linear(visual_spec.dim, w) if visual_spec.dim != w else nn.Identity()
        self.box_proj = nn.Linear(7, w) if visual_spec.has_boxes else None
        self.text_in = nn.Linear(text_spec.dim, w) if text_spec.dim != w else nn.Identity()
        self.modality = nn.Embedding(cfg.modality_types, w)
        self.first_vl = cfg.depth - cfg.vl_layers
        self.blocks = nn.ModuleList(
            MoMEBlock(
                w,
                cfg.heads,
                cfg.mlp_dim,
                vl_expert=i >= self.first_vl,
                eps=cfg.eps,
                act=cfg.act,
                layer_scale=cfg.layer_scale,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(w, eps=cfg.eps)
        self.pooler = nn.Linear(w, w)
        self.itc_image_proj = nn.Linear(w, cfg.embed_dim, bias=False)
        self.itc_text_proj = nn.Linear(w, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        init_transformer_weights(self, init_std(w))

    @property
    def family(self) -> str:
        """Dual mode: image and text never meet before the cosine; fusion mode: one transformer over both."""
        return "dual" if self.mode == "dual" else "fusion"

    @classmethod
    def from_config(cls, cfg: MoMEConfig, *, visual_spec: TokenSpec, text_spec: TokenSpec) -> MoMEInteraction:
        return cls(visual_spec, text_spec, cfg)

    def workload(self) -> dict[str, Any]:
        return {
            "visual_tokens": self.visual_spec.num_tokens,
            "text_tokens": self.text_spec.num_tokens,
            "mode": self.mode,
        }

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        return make_interaction_inputs(self.visual_spec, self.text_spec, batch_size, generator=generator, device=device)

    # -- pieces ------------------------------------------------------------------------------------------------
    def embed_image(self, visual: VisualTokens) -> torch.Tensor:
        """-> [B, N, W]: projected tokens (+ box location) + the image modality-type embedding."""
        v = self.visual_in(visual.features)
        if self.box_proj is not None:
            v = v + self.box_proj(box_features(visual.boxes.to(v.dtype)))
        return v + self.modality.weight[1]

    def embed_text(self, text: TextTokens) -> torch.Tensor:
        """-> [B, L, W]: projected tokens + the text modality-type embedding."""
        return self.text_in(text.features) + self.modality.weight[0]

    def encode(self, x: torch.Tensor, mask: torch.Tensor, expert: str, has_cls: bool) -> torch.Tensor:
        """One modality through every block with its expert: [B, T, W] -> [CLS] (or mean) [B, W]."""
        bias = attn_bias(mask, x.dtype)
        for blk in self.blocks:
            x = blk(x, expert, attn_mask=bias)
        return first_or_mean(self.norm(x), mask, has_cls)

    def similarity(self, image: torch.Tensor, text: torch.Tensor):
        """[B, E], [B, E] -> unit-norm [B, E], [B, E] and logits_per_image [B, B]."""
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return image, text, self.logit_scale.exp() * image @ text.t()

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, visual: VisualTokens, text: TextTokens, stage: StageFn = null_stage) -> InteractionOutput:
        check_tokens(visual, text, self.visual_spec, self.text_spec)
        return self._dual(visual, text, stage) if self.mode == "dual" else self._fusion(visual, text, stage)

    def _dual(self, visual: VisualTokens, text: TextTokens, stage: StageFn) -> InteractionOutput:
        with stage("image_encoder", "VE"):
            image = self.itc_image_proj(
                self.encode(self.embed_image(visual), visual.mask, "vision", self.visual_spec.has_cls)
            )
        with stage("text_encoder", "TE"):
            txt = self.itc_text_proj(self.encode(self.embed_text(text), text.mask, "language", self.text_spec.has_cls))
        with stage("similarity"):
            image, txt, logits = self.similarity(image, txt)
        return InteractionOutput(image_embeds=image, text_embeds=txt, logits_per_image=logits)

    def _fusion(self, visual: VisualTokens, text: TextTokens, stage: StageFn) -> InteractionOutput:
        length = text.features.shape[1]
        with stage("fuse"):
            x = torch.cat([self.embed_text(text), self.embed_image(visual)], dim=1)  # [B, L + N, W]
            mask = torch.cat([text.mask, visual.mask], dim=1)
            bias = attn_bias(mask, x.dtype)
        with stage("modality_layers"):
            for blk in self.blocks[: self.first_vl]:
                x = blk(x, attn_mask=bias, split=length)
        with stage("vl_layers"):
            for blk in self.blocks[self.first_vl :]:
                x = blk(x, "vl", attn_mask=bias)
        with stage("pooler"):
            x = self.norm(x)
            pooled = torch.tanh(self.pooler(first_or_mean(x[:, :length], text.mask, self.text_spec.has_cls)))
        return InteractionOutput(last_hidden_state=x, pooler_output=pooled, text_len=length)
