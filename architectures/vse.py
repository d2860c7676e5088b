"""Visual-semantic embedding with GPO pooling (VSE-infinity, Chen et al. CVPR 2021; woodfrog/vse_infty).

Taxonomy class (a): the interaction is a dot product of two pooled embeddings.

* image side (timed as VE, ``image_pool``): Linear (or Linear + residual 2-layer MLP, VSE-infinity's
  "backbone" mode) to the joint width, GPO pooling, L2 normalisation.  VSE-infinity reads region features
  alone; ``box_code="sincos"`` (vlpbench's option, off by default) appends to each region feature the fixed
  2-D sine-cosine code of its box centre (``architectures.common.box_sincos``, ``embed_dim`` wide) before the
  projection, so that a non-linear projection can bind what a region is to where it is before pooling;
* text side (timed as TE, ``text_pool``): Linear to the joint width when the text width differs
  (VSE-infinity's BERT text encoder), GPO pooling, L2 normalisation;
* ``similarity`` (MI): the [B_img, B_txt] cosine-similarity matrix.

GPO (Generalized Pooling Operator): each dimension's features are sorted in descending order over
the valid positions; a BiGRU over sinusoidal encodings of the rank index 0..n-1 gives one score per
rank, and softmax(score / 0.1) weights the sorted features.  Padded tokens are excluded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vlpbench.errors import bad_value
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput, TextTokens, TokenSpec, VisualTokens

from .common import box_sincos, check_box_code, random_boxes

VISUAL_PROJ = ("linear", "mlp")
VSE_BOX_CODES = ("none", "sincos")


@dataclass(frozen=True)
class VSEConfig:
    embed_dim: int = 1024  # joint embedding width
    visual_proj: str = (
        "linear"  # "linear" (precomputed features) or "mlp" (Linear + residual MLP, VSE-inf backbone mode)
    )
    gpo_pe_dim: int = 32  # width of the rank positional encoding fed to the GPO BiGRU
    gpo_hidden: int = 32  # GPO BiGRU hidden size per direction
    temperature: float = 0.1  # softmax temperature of the GPO weights
    default_visual_tokens: int = 36  # tokens for make_inputs when the visual spec leaves the count open
    box_code: str = "none"  # "none" (VSE-infinity: region features alone) or "sincos" (box-centre code appended)
    box_grid: float = 8.0  # sincos box code: grid cells per image side


def positional_encoding_1d(dim: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sinusoidal encoding of positions 0..length-1 -> [length, dim] (sin on even, cos on odd channels)."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class GPO(nn.Module):
    """features [B, N, D], mask [B, N] (True = real) -> pooled [B, D], weights [B, N] (0 on padded ranks)."""

    def __init__(self, pe_dim: int = 32, hidden: int = 32, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise bad_value("temperature", temperature, "a positive number")
        self.pe_dim = pe_dim
        self.temperature = temperature
        self.gru = nn.GRU(pe_dim, hidden, 1, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(hidden, 1, bias=False)

    def pool_weights(self, lengths: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        """lengths [B] (CPU int64, >= 1) -> softmax weights over ranks [B, n], zero at ranks >= length."""
        b = lengths.shape[0]
        pe = positional_encoding_1d(self.pe_dim, n, device).expand(b, n, self.pe_dim)  # [B, n, P]
        packed = pack_padded_sequence(pe, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=n)  # [B, n, 2*Hg]
        half = out.shape[-1] // 2
        out = (out[..., :half] + out[..., half:]) / 2  # [B, n, Hg]
        scores = self.linear(out).squeeze(-1) / self.temperature  # [B, n]
        valid = torch.arange(n, device=device)[None, :] < lengths.to(device)[:, None]
        return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.bool()
        lengths = mask.sum(dim=1).cpu()
        if int(lengths.min()) < 1:
            raise bad_value("token mask", "a row with no real token", "at least one real token per sample")
        b, n, d = features.shape
        weights = self.pool_weights(lengths, n, features.device)  # [B, n]
        # Sort each dimension over the real tokens only: padding goes to -inf, i.e. to the end.
        neg = torch.finfo(features.dtype).min
        ranked = features.masked_fill(~mask[..., None], neg).sort(dim=1, descending=True).values  # [B, n, D]
        valid_rank = torch.arange(n, device=features.device)[None, :] < lengths.to(features.device)[:, None]
        ranked = ranked.masked_fill(~valid_rank[..., None], 0.0)
        return (ranked * weights[..., None].to(ranked.dtype)).sum(dim=1), weights


class VisualProjection(nn.Module):
    """[B, N, Din] -> [B, N, E]: Linear, plus (mode "mlp") VSE-infinity's residual 2-layer MLP with BatchNorm."""

    def __init__(self, in_dim: int, embed_dim: int, mode: str = "linear"):
        super().__init__()
        if mode not in VISUAL_PROJ:
            raise bad_value("visual_proj", mode, VISUAL_PROJ)
        self.fc = nn.Linear(in_dim, embed_dim)
        self.mlp = None
        if mode == "mlp":
            self.mlp = nn.ModuleList(
                [
                    nn.Linear(in_dim, embed_dim // 2),
                    nn.BatchNorm1d(embed_dim // 2),
                    nn.Linear(embed_dim // 2, embed_dim),
                ]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        if self.mlp is not None:
            b, n, d = x.shape
            lin1, bn, lin2 = self.mlp
            h = F.relu(bn(lin1(x.reshape(b * n, d))))  # [B, N, Din] -> [B*N, E/2]
            out = out + lin2(h).reshape(b, n, -1)  # [B*N, E] -> [B, N, E]
        return out


class VSEInteraction(nn.Module):
    """VisualTokens [B, N, Dv] + TextTokens [B, L, Dt] -> image_embeds [B, E], text_embeds [B, E],
    logits_per_image [B, B] (cosine similarities; row i = image i against every text)."""

    family = "dual"  # pooled embeddings compared by cosine similarity (taxonomy class a)

    def __init__(
        self,
        visual_dim: int,
        text_dim: int,
        *,
        embed_dim: int = 1024,
        visual_proj: str = "linear",
        gpo_pe_dim: int = 32,
        gpo_hidden: int = 32,
        temperature: float = 0.1,
        visual_tokens: int = 36,
        text_tokens: int = 40,
        box_code: str = "none",
        box_grid: float = 8.0,
    ):
        super().__init__()
        if embed_dim < 2:
            raise bad_value("embed_dim", embed_dim, "an integer >= 2")
        check_box_code(box_code, box_grid, embed_dim, accepted=VSE_BOX_CODES)
        self.visual_dim, self.text_dim = visual_dim, text_dim
        self.output_dim = embed_dim
        self.visual_tokens, self.text_tokens = visual_tokens, text_tokens
        self.box_code, self.box_grid = box_code, float(box_grid)
        code_dim = embed_dim if box_code == "sincos" else 0
        self.image_proj = VisualProjection(visual_dim + code_dim, embed_dim, visual_proj)
        self.text_proj = nn.Linear(text_dim, embed_dim) if text_dim != embed_dim else nn.Identity()
        self.image_gpo = GPO(gpo_pe_dim, gpo_hidden, temperature)
        self.text_gpo = GPO(gpo_pe_dim, gpo_hidden, temperature)

    @classmethod
    def from_config(cls, cfg: VSEConfig, *, visual_spec: TokenSpec, text_spec: TokenSpec) -> VSEInteraction:
        if cfg.box_code != "none" and not visual_spec.has_boxes:
            raise bad_value("box_code", cfg.box_code, "'none' for a visual embedder without boxes (regions have them)")
        return cls(
            visual_spec.dim,
            text_spec.dim,
            embed_dim=cfg.embed_dim,
            visual_proj=cfg.visual_proj,
            gpo_pe_dim=cfg.gpo_pe_dim,
            gpo_hidden=cfg.gpo_hidden,
            temperature=cfg.temperature,
            visual_tokens=visual_spec.num_tokens or cfg.default_visual_tokens,
            text_tokens=text_spec.num_tokens or 40,
            box_code=cfg.box_code,
            box_grid=cfg.box_grid,
        )

    # -- Benchmarkable -------------------------------------------------------------------------
    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        """Random token features of the declared widths, every token real."""
        g = generator.device
        v = torch.randn(batch_size, self.visual_tokens, self.visual_dim, generator=generator, device=g).to(device)
        t = torch.randn(batch_size, self.text_tokens, self.text_dim, generator=generator, device=g).to(device)
        ones = lambda x: torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # noqa: E731
        boxes = None
        if self.box_code != "none":
            boxes = random_boxes(batch_size, self.visual_tokens, generator=generator, device=device)
        return {"visual": VisualTokens(v, ones(v), boxes=boxes), "text": TextTokens(t, ones(t))}

    def workload(self) -> dict[str, Any]:
        return {"visual_tokens": self.visual_tokens, "text_len": self.text_tokens, "embed_dim": self.output_dim}

    # -- forward -------------------------------------------------------------------------------
    def pool_image(self, visual: VisualTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """-> L2-normalised image embeddings [B, E] and GPO weights [B, N]."""
        features = visual.features
        if self.box_code == "sincos":  # [B, N, Dv] + [B, N, E] -> [B, N, Dv + E]
            code = box_sincos(visual.boxes.to(features.dtype), self.output_dim, self.box_grid)
            features = torch.cat([features, code], dim=-1)
        pooled, weights = self.image_gpo(self.image_proj(features), visual.mask)
        return F.normalize(pooled, dim=-1), weights

    def pool_text(self, text: TextTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """-> L2-normalised text embeddings [B, E] and GPO weights [B, L]."""
        pooled, weights = self.text_gpo(self.text_proj(text.features), text.mask)
        return F.normalize(pooled, dim=-1), weights

    def _check(self, visual: VisualTokens, text: TextTokens) -> None:
        if visual.features.shape[-1] != self.visual_dim:
            raise bad_value("visual token width", visual.features.shape[-1], f"{self.visual_dim} (the visual spec)")
        if self.box_code != "none" and visual.boxes is None:
            raise bad_value("VisualTokens.boxes", None, f"region boxes [B, N, 4] for box_code={self.box_code!r}")
        if text.features.shape[-1] != self.text_dim:
            raise bad_value("text token width", text.features.shape[-1], f"{self.text_dim} (the text spec)")

    def forward(self, visual: VisualTokens, text: TextTokens, stage: StageFn = null_stage) -> InteractionOutput:
        self._check(visual, text)
        with stage("image_pool", "VE"):
            image_embeds, _ = self.pool_image(visual)
        with stage("text_pool", "TE"):
            text_embeds, _ = self.pool_text(text)
        with stage("similarity"):
            logits = image_embeds @ text_embeds.t()  # [B_img, E] x [E, B_txt] -> [B_img, B_txt]
        return InteractionOutput(image_embeds=image_embeds, text_embeds=text_embeds, logits_per_image=logits)


def hinge_triplet_loss(logits_per_image: torch.Tensor, margin: float = 0.2, hardest: bool = True) -> torch.Tensor:
    """VSE++ hinge triplet loss. [B, B] similarities, positives on the diagonal -> scalar (summed over the batch).

    For each positive pair (i, i): image-to-text cost max(0, margin + s(i, j) - s(i, i)) over texts j != i,
    text-to-image cost max(0, margin + s(j, i) - s(i, i)) over images j != i.  ``hardest=True`` keeps only the
    hardest negative of each (VSE++ "max violation"); otherwise the costs are summed.
    """
    if logits_per_image.dim() != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise bad_value("similarity matrix shape", tuple(logits_per_image.shape), "square [B, B]")
    s = logits_per_image
    pos = s.diagonal()
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    cost_text = (margin + s - pos[:, None]).clamp(min=0).masked_fill(eye, 0)  # row i: image i vs texts j
    cost_image = (margin + s - pos[None, :]).clamp(min=0).masked_fill(eye, 0)  # column i: text i vs images j
    if hardest:
        return cost_text.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
    return cost_text.sum() + cost_image.sum()
