"""ViLBERT's two-stream co-attention interaction (Lu et al. 2019; jiasenlu/vilbert_beta,
``bert_base_6layer_6conect.json``).

Taxonomy class (c) when fed CNN features.  Layer schedule, as in vilbert_beta's ``BertEncoder``::

    text layers 0..t_ids[0]-1 alone                          -> stage "text_only"
    visual projection + 5-d location + whole-image token     -> stage "visual_embed"
    for each connection k: co-attention k, then the next     -> stage "co_layers"
        visual layer(s) up to v_ids[k+1] and text layer(s) up to t_ids[k+1]; then the remaining layers
    first-token poolers (Linear + ReLU to bi-hidden), product -> stage "pool"

With the default ids (visual 0-5, text 6-11): text 0-5, co0, v0, t6, co1, v1, t7, ..., co5, v5, t11.
A co-attention block (``BertConnectionLayer``) lets each stream's queries attend to the other stream's
keys and values at the bi-hidden width (vision queries, text keys/values and vice versa, computed
from the same inputs), each followed by a post-norm residual and the stream's own feed-forward.

Visual input: tokens are projected from ``visual_spec.dim`` to the visual width and LayerNorm-ed.  With
boxes (region features) the 5-d location (x1, y1, x2, y2, area ratio; boxes already normalised) goes
through Linear(5, visual_hidden) and is added first (``box_code="linear+sincos"`` also adds a fixed sine-cosine
code of the box centre, :data:`architectures.common.BOX_CODES`); without boxes (grid / patch tokens) that is
skipped.  ``freeze_visual_proj`` keeps the visual projection at its initialisation.
A whole-image token (masked mean of the features; box [0, 0, 1, 1], area 1 when boxes exist) is
prepended unless the visual spec already has a summary token (``has_cls``, e.g. ViLT patches), so
region and grid tokens both get one and the visual pooler always reads a whole-image summary.
``image_token`` (:data:`IMAGE_TOKENS`) swaps that mean for a learned embedding, or drops the token and pools
the visual stream's masked mean instead.
Text input: projected from ``text_spec.dim`` to the text width when they differ (inside ``text_only``).

Outputs: ``pooler_output`` [B, bi_hidden] = ReLU(Linear(text[:, 0])) * ReLU(Linear(visual[:, 0])) (``fusion="sum"``:
the sum, vilbert_beta's other ``fusion_method``);
``last_hidden_state`` holds the **text stream only** [B, L, text_hidden] (``text_len`` = L), because the
two streams have different widths (768 / 1024) and ViLBERT never projects them to a common one; the
visual stream [B, 1+N, visual_hidden] is in ``extras["visual_hidden_state"]`` with ``extras["visual_mask"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.layers import Attention, Block, Mlp, init_std, init_transformer_weights, padding_to_attn_mask
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput, TextTokens, TokenSpec, VisualTokens

from .common import box_sincos, check_box_code

# How the two first-token poolers are joined: vilbert_beta's ``fusion_method`` ("mul" by default, or "sum").
FUSIONS = ("mul", "sum")
# The visual stream's first token, which the visual pooler reads: "mean" (ViLBERT: the mean of the region
# features, box [0, 0, 1, 1]), "learned" (a learned embedding with that box, which carries no image content
# until it attends to the regions) or "none" (no extra token; the visual pooler reads the masked mean of the
# visual stream's output).  Visual specs with their own summary token (``has_cls``) never get one.
IMAGE_TOKENS = ("mean", "learned", "none")


@dataclass(frozen=True)
class CoAttentionConfig:
    text_hidden: int = 768  # text-stream width (BERT-base)
    text_layers: int = 12  # text-stream layers
    text_heads: int = 12  # text self-attention heads
    text_mlp: int = 3072  # text feed-forward width
    visual_hidden: int = 1024  # visual-stream width (v_hidden_size)
    visual_layers: int = 6  # visual-stream layers
    visual_heads: int = 8  # visual self-attention heads
    visual_mlp: int = 1024  # visual feed-forward width (v_intermediate_size)
    bi_hidden: int = 1024  # co-attention width (bi_hidden_size), also the pooled width
    bi_heads: int = 8  # co-attention heads
    visual_co_ids: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # visual layer each connection precedes
    text_co_ids: tuple[int, ...] = (6, 7, 8, 9, 10, 11)  # text layer each connection precedes
    max_text_len: int = 512  # longest accepted text (BERT position table)
    eps: float = 1e-12  # LayerNorm epsilon (BERT)
    act: str = "gelu"  # feed-forward activation
    default_visual_tokens: int = 36  # regions for make_inputs when the visual spec leaves the count open
    box_code: str = "linear"  # region boxes: "linear" (ViLBERT) or "linear+sincos" (architectures.common)
    box_grid: float = 8.0  # sincos box code: grid cells per image side
    freeze_visual_proj: bool = False  # keep the visual projection at its initialisation
    fusion: str = "mul"  # pooled text and image: "mul" (ViLBERT's default fusion_method) or "sum" (its other)
    image_token: str = "mean"  # the visual stream's first token: "mean" (ViLBERT), "learned" or "none" (IMAGE_TOKENS)


class CoAttentionLayer(nn.Module):
    """One ViLBERT connection: (v [B, N, Dv], t [B, L, Dt]) -> (v', t'), same shapes."""

    def __init__(
        self,
        v_dim: int,
        t_dim: int,
        bi_dim: int,
        bi_heads: int,
        v_mlp: int,
        t_mlp: int,
        eps: float = 1e-12,
        act: str = "gelu",
    ):
        super().__init__()
        # v_attn: query1 -> q, [key2; value2] -> kv, dense1 -> proj;  t_attn: query2, [key1; value1], dense2.
        self.v_attn = Attention(v_dim, bi_heads, kv_dim=t_dim, inner_dim=bi_dim, out_dim=v_dim)
        self.t_attn = Attention(t_dim, bi_heads, kv_dim=v_dim, inner_dim=bi_dim, out_dim=t_dim)
        self.v_ln1, self.t_ln1 = nn.LayerNorm(v_dim, eps=eps), nn.LayerNorm(t_dim, eps=eps)
        self.v_mlp, self.t_mlp = Mlp(v_dim, v_mlp, act=act), Mlp(t_dim, t_mlp, act=act)
        self.v_ln2, self.t_ln2 = nn.LayerNorm(v_dim, eps=eps), nn.LayerNorm(t_dim, eps=eps)

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, v_bias: torch.Tensor | None, t_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v_ctx = self.v_attn(v, context=t, attn_mask=t_bias)  # visual queries over text keys/values
        t_ctx = self.t_attn(t, context=v, attn_mask=v_bias)  # text queries over visual keys/values
        v, t = self.v_ln1(v + v_ctx), self.t_ln1(t + t_ctx)
        return self.v_ln2(v + self.v_mlp(v)), self.t_ln2(t + self.t_mlp(t))


def _schedule(v_ids: tuple[int, ...], t_ids: tuple[int, ...], n_v: int, n_t: int) -> list[tuple[str, int]]:
    """The co_layers steps after the text-only prefix: ("v", i) visual layer, ("t", i) text layer, ("c", k)."""
    steps: list[tuple[str, int]] = []
    v_start, t_start = 0, t_ids[0]
    for k, (vi, ti) in enumerate(zip(v_ids, t_ids)):
        steps += [("v", j) for j in range(v_start, vi)] + [("t", j) for j in range(t_start, ti)] + [("c", k)]
        v_start, t_start = vi, ti
    return steps + [("v", j) for j in range(v_start, n_v)] + [("t", j) for j in range(t_start, n_t)]


class CoAttentionInteraction(nn.Module):
    """VisualTokens [B, N, Dv] (+ boxes) and TextTokens [B, L, Dt] -> InteractionOutput (see module doc)."""

    family = "fusion"  # two streams that exchange keys and values through co-attention (taxonomy class c)

    def __init__(self, visual_spec: TokenSpec, text_spec: TokenSpec, cfg: CoAttentionConfig):
        super().__init__()
        v_ids, t_ids = tuple(cfg.visual_co_ids), tuple(cfg.text_co_ids)
        if not v_ids or len(v_ids) != len(t_ids):
            raise bad_value("co-attention ids", (v_ids, t_ids), "two non-empty lists of equal length")
        for name, ids, n in (("visual_co_ids", v_ids, cfg.visual_layers), ("text_co_ids", t_ids, cfg.text_layers)):
            if list(ids) != sorted(set(ids)) or ids[0] < 0 or ids[-1] > n:
                raise bad_value(name, ids, f"strictly increasing layer indices in 0..{n}")
        if text_spec.num_tokens is not None and text_spec.num_tokens > cfg.max_text_len:
            raise bad_value("text length", text_spec.num_tokens, f"at most {cfg.max_text_len} tokens")
        check_box_code(cfg.box_code, cfg.box_grid, cfg.visual_hidden, cfg.freeze_visual_proj)
        if cfg.fusion not in FUSIONS:
            raise bad_value("fusion", cfg.fusion, FUSIONS)
        self.fusion = cfg.fusion
        self.cfg = cfg
        self.box_code, self.box_grid = cfg.box_code, float(cfg.box_grid)
        self.visual_dim, self.text_dim = visual_spec.dim, text_spec.dim
        self.has_boxes = visual_spec.has_boxes
        self.has_cls = visual_spec.has_cls
        self.visual_tokens = visual_spec.num_tokens or cfg.default_visual_tokens
        self.text_tokens = text_spec.num_tokens or 40
        self.output_dim = cfg.bi_hidden
        self.text_in = nn.Linear(text_spec.dim, cfg.text_hidden) if text_spec.dim != cfg.text_hidden else nn.Identity()
        bert = dict(norm_first=False, eps=cfg.eps, act=cfg.act)
        self.text_layers = nn.ModuleList(
            Block(cfg.text_hidden, cfg.text_heads, cfg.text_mlp, **bert) for _ in range(cfg.text_layers)
        )
        self.v_proj = nn.Linear(visual_spec.dim, cfg.visual_hidden)
        self.v_loc = nn.Linear(5, cfg.visual_hidden) if self.has_boxes else None
        self.v_norm = nn.LayerNorm(cfg.visual_hidden, eps=cfg.eps)
        self.visual_layers = nn.ModuleList(
            Block(cfg.visual_hidden, cfg.visual_heads, cfg.visual_mlp, **bert) for _ in range(cfg.visual_layers)
        )
        self.co_layers = nn.ModuleList(
            CoAttentionLayer(
                cfg.visual_hidden,
                cfg.text_hidden,
                cfg.bi_hidden,
                cfg.bi_heads,
                cfg.visual_mlp,
                cfg.text_mlp,
                cfg.eps,
                cfg.act,
            )
            for _ in v_ids
        )
        self.t_pool = nn.Linear(cfg.text_hidden, cfg.bi_hidden)
        self.v_pool = nn.Linear(cfg.visual_hidden, cfg.bi_hidden)
        self.text_prefix = t_ids[0]
        self.steps = _schedule(v_ids, t_ids, cfg.visual_layers, cfg.text_layers)
        # vilbert_beta's init_bert_weights: every Linear N(0, 0.02), biases 0, LayerNorm 1 / 0
        init_transformer_weights(self, init_std(min(cfg.text_hidden, cfg.visual_hidden, cfg.bi_hidden)))
        self.use_image_token(cfg.image_token)
        if cfg.freeze_visual_proj:
            self.v_proj.requires_grad_(False)

    def use_image_token(self, mode: str) -> None:
        """Set the visual stream's first token (:data:`IMAGE_TOKENS`); a "learned" one starts at N(0, init std)."""
        if mode not in IMAGE_TOKENS:
            raise bad_value("image_token", mode, IMAGE_TOKENS)
        self.image_token = "cls" if self.has_cls else mode
        self.add_image_token = self.image_token in ("mean", "learned")
        self.image_embed = None  # "learned": replaces the projected mean feature
        if self.image_token == "learned":
            hidden = self.cfg.visual_hidden
            self.image_embed = nn.Parameter(torch.empty(1, 1, hidden, device=self.v_proj.weight.device))
            nn.init.normal_(self.image_embed, std=init_std(hidden))

    @classmethod
    def from_config(
        cls, cfg: CoAttentionConfig, *, visual_spec: TokenSpec, text_spec: TokenSpec
    ) -> CoAttentionInteraction:
        return cls(visual_spec, text_spec, cfg)

    # -- Benchmarkable -------------------------------------------------------------------------
    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        """Random features of the declared widths (and valid random boxes for region specs), every token real."""
        g, b, n = generator.device, batch_size, self.visual_tokens
        v = torch.randn(b, n, self.visual_dim, generator=generator, device=g)
        t = torch.randn(b, self.text_tokens, self.text_dim, generator=generator, device=g)
        boxes = None
        if self.has_boxes:
            xy = torch.rand(b, n, 2, generator=generator, device=g) * 0.5
            wh = 0.1 + torch.rand(b, n, 2, generator=generator, device=g) * 0.4
            boxes = torch.cat([xy, xy + wh], dim=-1).to(device)
        vmask = torch.ones(b, n, dtype=torch.bool, device=device)
        tmask = torch.ones(b, self.text_tokens, dtype=torch.bool, device=device)
        return {"visual": VisualTokens(v.to(device), vmask, boxes=boxes), "text": TextTokens(t.to(device), tmask)}

    def workload(self) -> dict[str, Any]:
        return {
            "visual_tokens": self.visual_tokens + int(self.add_image_token),
            "text_len": self.text_tokens,
            "co_connections": len(self.co_layers),
        }

    # -- forward -------------------------------------------------------------------------------
    def _check(self, visual: VisualTokens, text: TextTokens) -> None:
        vf, tf = visual.features, text.features
        if vf.dim() != 3 or vf.shape[-1] != self.visual_dim:
            raise bad_value("visual features shape", tuple(vf.shape), f"[B, N, {self.visual_dim}] (the visual spec)")
        if tf.dim() != 3 or tf.shape[-1] != self.text_dim:
            raise bad_value("text features shape", tuple(tf.shape), f"[B, L, {self.text_dim}] (the text spec)")
        if vf.shape[0] != tf.shape[0]:
            raise VlpbenchError(
                f"invalid batch sizes: {vf.shape[0]} images vs {tf.shape[0]} texts; "
                "accepted: equal batch sizes (one text per image)"
            )
        if tf.shape[1] > self.cfg.max_text_len:
            raise bad_value("text length", tf.shape[1], f"at most {self.cfg.max_text_len} tokens")
        if self.has_boxes and (visual.boxes is None or visual.boxes.shape != (*vf.shape[:2], 4)):
            got = None if visual.boxes is None else tuple(visual.boxes.shape)
            raise bad_value("visual boxes", got, "[B, N, 4] normalised boxes (the visual spec has boxes)")

    def embed_visual(self, visual: VisualTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """-> visual-stream input [B, N(+1), visual_hidden] and its mask [B, N(+1)]."""
        feats, mask, boxes = visual.features, visual.mask.bool(), visual.boxes
        if self.add_image_token:
            m = mask[..., None].to(feats.dtype)
            image = (feats * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1, Dv]
            feats = torch.cat([image, feats], dim=1)  # [B, 1+N, Dv]
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
            if self.has_boxes:
                full = boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(boxes.shape[0], 1, 4)
                boxes = torch.cat([full, boxes], dim=1)
        x = self.v_proj(feats)
        if self.image_embed is not None:  # the token's content is learned, not the features' mean
            x = torch.cat([self.image_embed.to(x.dtype).expand(x.shape[0], 1, -1), x[:, 1:]], dim=1)
        if self.has_boxes:
            area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
            loc = torch.cat([boxes, area[..., None]], dim=-1)  # [B, N, 4] -> [B, N, 5]
            x = x + self.v_loc(loc.to(x.dtype))
            if self.box_code == "linear+sincos":
                x = x + box_sincos(boxes.to(x.dtype), x.shape[-1], self.box_grid)
        return self.v_norm(x), mask

    def forward(self, visual: VisualTokens, text: TextTokens, stage: StageFn = null_stage) -> InteractionOutput:
        self._check(visual, text)
        with stage("text_only"):
            t = self.text_in(text.features)
            t_bias = padding_to_attn_mask(text.mask, t.dtype)
            for layer in self.text_layers[: self.text_prefix]:
                t = layer(t, attn_mask=t_bias)
        with stage("visual_embed"):
            v, v_mask = self.embed_visual(visual)
            v_bias = padding_to_attn_mask(v_mask, v.dtype)
        with stage("co_layers"):
            for kind, i in self.steps:
                if kind == "c":
                    v, t = self.co_layers[i](v, t, v_bias, t_bias)
                elif kind == "v":
                    v = self.visual_layers[i](v, attn_mask=v_bias)
                else:
                    t = self.text_layers[i](t, attn_mask=t_bias)
        with stage("pool"):
            if self.image_token == "none":  # masked mean of the visual stream
                m = v_mask[..., None].to(v.dtype)
                v_first = (v * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
            else:
                v_first = v[:, 0]
            t_pooled, v_pooled = torch.relu(self.t_pool(t[:, 0])), torch.relu(self.v_pool(v_first))
            pooled = t_pooled * v_pooled if self.fusion == "mul" else t_pooled + v_pooled  # [B, bi_hidden]
        return InteractionOutput(
            last_hidden_state=t,
            pooler_output=pooled,
            text_len=t.shape[1],
            extras={"visual_hidden_state": v, "visual_mask": v_mask},
        )
