"""ViLT's single-stream interaction: one transformer over [text tokens; visual tokens].

Stages: ``fuse`` (project to the width, add box-location and modality-type embeddings, concatenate,
build the padding mask) -> ``encoder`` (the pre-norm layers and the final LayerNorm) -> ``pooler``
(Linear + tanh on the first token, the text [CLS]).

It takes any visual embedder: tokens of another width are projected by a Linear, and region
features (``TokenSpec.has_boxes``) get UNITER's 7-d location encoding (x1, y1, x2, y2, w, h, w*h) ->
Linear, added to the projected feature; ``box_code="linear+sincos"`` adds a fixed sine-cosine code of the box
centre beside it (:data:`architectures.common.BOX_CODES`), and ``freeze_visual_proj`` keeps the projection
of the visual tokens at its initialisation (the study's region presets use both: README "Measured here").
Weight names follow :mod:`vlpbench.layers` so
:mod:`architectures.loaders` can map transformers' ``ViltModel`` onto it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlpbench.errors import bad_value
from vlpbench.layers import Encoder, attn_bias, init_std, init_transformer_weights
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput, TextTokens, TokenSpec, VisualTokens

from .common import box_features, box_sincos, check_box_code, check_tokens, make_interaction_inputs


@dataclass(frozen=True)
class SingleStreamConfig:
    width: int = 768  # transformer width (ViT-B/32)
    depth: int = 12  # layers
    heads: int = 12  # attention heads
    mlp_dim: int = 3072  # MLP hidden width
    act: str = "gelu"  # MLP activation
    eps: float = 1e-12  # LayerNorm eps (ViLT keeps BERT's 1e-12)
    modality_types: int = 2  # modality-type embedding rows (0 text, 1 image; NLVR2 adds 2)
    dropout: float = 0.0  # hidden / attention dropout (training only)
    box_code: str = "linear"  # region boxes: "linear" (UNITER) or "linear+sincos" (architectures.common)
    box_grid: float = 8.0  # sincos box code: grid cells per image side
    freeze_visual_proj: bool = False  # keep the visual-token projection at its initialisation
    # multiplies the visual projection's initial weights: how large a projected visual token starts beside
    # the text tokens and the box code (with freeze_visual_proj, how large it stays)
    visual_proj_gain: float = 1.0


class SingleStreamInteraction(nn.Module):
    """(VisualTokens [B, N, Dv], TextTokens [B, L, Dt]) -> InteractionOutput(last_hidden_state [B, L + N, W],
    pooler_output [B, W], text_len=L)."""

    family = "fusion"  # text and visual tokens mixed in one transformer (taxonomy classes c, d)

    def __init__(
        self,
        visual_spec: TokenSpec,
        text_spec: TokenSpec,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_dim: int = 3072,
        *,
        act: str = "gelu",
        eps: float = 1e-12,
        modality_types: int = 2,
        dropout: float = 0.0,
        box_code: str = "linear",
        box_grid: float = 8.0,
        freeze_visual_proj: bool = False,
        visual_proj_gain: float = 1.0,
    ):
        super().__init__()
        if width % heads:
            raise bad_value("width", width, f"a multiple of heads={heads}")
        check_box_code(box_code, box_grid, width, freeze_visual_proj)
        if freeze_visual_proj and visual_spec.dim == width:
            raise bad_value(
                "freeze_visual_proj", freeze_visual_proj, f"false: visual tokens of width {width} are not projected"
            )
        gain = visual_proj_gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or gain <= 0:
            raise bad_value("visual_proj_gain", gain, "a number > 0")
        if gain != 1 and visual_spec.dim == width:
            raise bad_value("visual_proj_gain", gain, f"1: visual tokens of width {width} are not projected")
        self.visual_spec, self.text_spec = visual_spec, text_spec
        self.output_dim = width
        self.text_proj = nn.Linear(text_spec.dim, width) if text_spec.dim != width else nn.Identity()
        self.visual_proj = nn.Linear(visual_spec.dim, width) if visual_spec.dim != width else nn.Identity()
        self.box_proj = nn.Linear(7, width) if visual_spec.has_boxes else None
        self.modality = nn.Embedding(modality_types, width)
        self.encoder = Encoder(
            width, depth, heads, mlp_dim, norm_first=True, act=act, eps=eps, drop=dropout, attn_drop=dropout
        )
        self.norm = nn.LayerNorm(width, eps=eps)
        self.pooler = nn.Linear(width, width)
        self.act = act
        self.box_code, self.box_grid = box_code, float(box_grid)
        # ViLT / UNITER initialise every Linear, Embedding and LayerNorm of the model this way
        init_transformer_weights(self, init_std(width))
        if gain != 1:
            with torch.no_grad():
                self.visual_proj.weight.mul_(gain)
        if freeze_visual_proj:
            self.visual_proj.requires_grad_(False)

    @classmethod
    def from_config(
        cls, cfg: SingleStreamConfig, *, visual_spec: TokenSpec, text_spec: TokenSpec
    ) -> SingleStreamInteraction:
        return cls(
            visual_spec,
            text_spec,
            cfg.width,
            cfg.depth,
            cfg.heads,
            cfg.mlp_dim,
            act=cfg.act,
            eps=cfg.eps,
            modality_types=cfg.modality_types,
            dropout=cfg.dropout,
            box_code=cfg.box_code,
            box_grid=cfg.box_grid,
            freeze_visual_proj=cfg.freeze_visual_proj,
            visual_proj_gain=cfg.visual_proj_gain,
        )

    def workload(self) -> dict[str, Any]:
        return {"visual_tokens": self.visual_spec.num_tokens, "text_tokens": self.text_spec.num_tokens}

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        return make_interaction_inputs(self.visual_spec, self.text_spec, batch_size, generator=generator, device=device)

    def fuse(self, visual: VisualTokens, text: TextTokens, image_type: int = 1):
        """-> x [B, L + N, W], additive mask [B, 1, 1, L + N] or None when every token is real."""
        t = self.text_proj(text.features) + self.modality.weight[0]
        v = self.visual_proj(visual.features)
        if self.box_proj is not None:
            v = v + self.box_proj(box_features(visual.boxes.to(v.dtype)))
            if self.box_code == "linear+sincos":
                v = v + box_sincos(visual.boxes.to(v.dtype), v.shape[-1], self.box_grid)
        v = v + self.modality.weight[image_type]
        x = torch.cat([t, v], dim=1)  # [B, L, W] + [B, N, W] -> [B, L + N, W]
        mask = torch.cat([text.mask, visual.mask], dim=1)
        # all-real sequences skip the mask so SDPA can take its unmasked kernel
        return x, attn_bias(mask, x.dtype)

    def use_fast_path(self, attn_mask: torch.Tensor | None) -> bool:
        """Inference without padding runs each layer as one fused native op (``torch._transformer_encoder_layer_fwd``,
        the kernel behind ``nn.TransformerEncoderLayer``'s fast path: fused qkv, SDPA, bias+GELU, LayerNorm).
        It is skipped when gradients are on, with a padding mask, for non-GELU activations, and when
        ``torch.backends.mha.set_fastpath_enabled(False)`` (FLOP counters see 0 FLOPs inside it)."""
        return (
            attn_mask is None
            and not self.training
            and not torch.is_grad_enabled()
            and self.act == "gelu"
            and torch.backends.mha.get_fastpath_enabled()
            and hasattr(torch, "_transformer_encoder_layer_fwd")
        )

    def run_encoder(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, T, W] -> [B, T, W] through the layers and the final LayerNorm."""
        if not self.use_fast_path(attn_mask):
            return self.norm(self.encoder(x, attn_mask=attn_mask))
        for blk in self.encoder.layers:  # pre-norm Blocks: x + attn(ln1(x)); x + mlp(ln2(x))
            x = torch._transformer_encoder_layer_fwd(
                x,
                self.output_dim,
                blk.attn.num_heads,
                blk.attn.qkv.weight,
                blk.attn.qkv.bias,
                blk.attn.proj.weight,
                blk.attn.proj.bias,
                True,
                True,
                blk.ln1.eps,
                blk.ln1.weight,
                blk.ln1.bias,
                blk.ln2.weight,
                blk.ln2.bias,
                blk.mlp.fc1.weight,
                blk.mlp.fc1.bias,
                blk.mlp.fc2.weight,
                blk.mlp.fc2.bias,
                None,
                None,
            )
        return self.norm(x)

    def forward_image(self, visual: VisualTokens) -> torch.Tensor:
        """The transformer over the image tokens alone (no text, no modality embedding) -> [B, N, W]: what a ViT's
        ``forward_features`` computes.  ViLT starts these layers from ViT-B/32 (timm's vit_base_patch32_384);
        :func:`architectures.loaders.load_timm_vit` loads such a checkpoint, and this checks the load."""
        x = self.visual_proj(visual.features)
        return self.run_encoder(x, attn_bias(visual.mask, x.dtype))

    def forward(
        self, visual: VisualTokens, text: TextTokens, stage: StageFn = null_stage, image_type: int = 1
    ) -> InteractionOutput:
        check_tokens(visual, text, self.visual_spec, self.text_spec)
        if not 0 < image_type < self.modality.num_embeddings:
            raise bad_value("image_type", image_type, f"1 to {self.modality.num_embeddings - 1}")
        with stage("fuse"):
            x, attn_mask = self.fuse(visual, text, image_type)
        with stage("encoder"):
            x = self.run_encoder(x, attn_mask)
        with stage("pooler"):
            pooled = torch.tanh(self.pooler(x[:, 0]))
        return InteractionOutput(last_hidden_state=x, pooler_output=pooled, text_len=text.features.shape[1])
