"""Task heads on an :class:`InteractionOutput` (designs from ViLT ``vilt/modules/heads.py`` and BERT).

Each head is built as ``Head.from_config(config, in_dim=interaction.output_dim)``, wraps its work in one stage
named after it, and returns a dict of tensors.  A head fed an output that lacks what it needs raises
:class:`VlpbenchError` naming the head and the missing field.

========== ======================================== ===========================================
head       reads                                    returns
========== ======================================== ===========================================
itm        pooler_output [B, d]                     logits [B, 2]
mlm        last_hidden_state[:, :text_len] [B,L,h]  logits [B, L, vocab]
itc        logits_per_image [B_i, B_t]              logits_per_image, logits_per_text [B_t, B_i]
vqa        pooler_output [B, d]                     logits [B, num_answers]
nlvr2      pooler_output of two passes              logits [B, 2]
retrieval  pooler_output [B, d]                     scores [B]
========== ======================================== ===========================================

NLVR2 is fed as ``head(out_image1, stage, pair=out_image2)``: the interaction runs once per image of the
pair with the same text, and the head concatenates the two pooled outputs ([B, 2d]).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import InteractionOutput


@dataclass(frozen=True)
class ITMConfig:
    num_classes: int = 2  # match / no match


@dataclass(frozen=True)
class MLMConfig:
    vocab_size: int = 30522  # decoder rows (bert-base-uncased)
    hidden_dim: int | None = None  # width of the text tokens; None = in_dim (set 768 for ViLBERT's text stream)
    eps: float = 1e-12  # LayerNorm epsilon of the transform


@dataclass(frozen=True)
class ITCConfig:
    """No options: the ITC head is parameter-free and reads the interaction's similarity logits."""


@dataclass(frozen=True)
class VQAConfig:
    num_answers: int = 3129  # VQAv2 answer vocabulary


@dataclass(frozen=True)
class NLVR2Config:
    num_classes: int = 2  # true / false


@dataclass(frozen=True)
class RetrievalConfig:
    num_negatives: int = 15  # negatives per positive in the ranking loss (ViLT: 15 texts)


def _need(head: str, out: InteractionOutput, *fields: str) -> None:
    missing = [f for f in fields if getattr(out, f) is None]
    if missing:
        raise VlpbenchError(
            f"invalid input for head {head!r}: the interaction output has no {', '.join(missing)}; "
            f"accepted: an output with {', '.join(fields)}"
            + (
                " (a fusion model such as ViLT or ViLBERT)"
                if "logits_per_image" not in fields
                else " (a dual encoder such as CLIP or VSE)"
            )
        )


def _check_width(head: str, x: torch.Tensor, width: int, field: str, hint: str = "the head's in_dim") -> None:
    if x.shape[-1] != width:
        raise bad_value(f"input for head {head!r}: {field} width", x.shape[-1], f"{width} ({hint})")


def _check_in_dim(head: str, in_dim: int) -> None:
    if not isinstance(in_dim, int) or in_dim < 1:
        raise bad_value(f"in_dim for head {head!r}", in_dim, "a positive integer")


class _Head(nn.Module):
    name = ""
    images_per_example = 1  # NLVR2 reads two images per text (the model then runs the interaction twice)

    @classmethod
    def from_config(cls, cfg: Any, *, in_dim: int) -> _Head:
        """The head on an interaction output of width ``in_dim``; the config's fields are its options."""
        _check_in_dim(cls.name, in_dim)
        return cls(in_dim, **dataclasses.asdict(cfg))

    def workload(self) -> dict[str, Any]:
        return {}

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        """A fusion-model output with random pooled [B, in_dim] features."""
        pooled = torch.randn(batch_size, self.in_dim, generator=generator, device=generator.device).to(device)
        return {"out": InteractionOutput(pooler_output=pooled)}


class ITMHead(_Head):
    """pooler_output [B, d] -> {"logits": [B, 2]}."""

    name = "itm"

    def __init__(self, in_dim: int, num_classes: int = 2):
        super().__init__()
        self.in_dim = in_dim
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, out: InteractionOutput, stage: StageFn = null_stage, **kwargs: Any) -> dict[str, torch.Tensor]:
        _need(self.name, out, "pooler_output")
        _check_width(self.name, out.pooler_output, self.in_dim, "pooler_output")
        with stage(self.name):
            return {"logits": self.fc(out.pooler_output)}


class MLMHead(_Head):
    """Text part of last_hidden_state [B, L, h] -> {"logits": [B, L, vocab]} (BERT transform + decoder)."""

    name = "mlm"

    def __init__(self, in_dim: int, vocab_size: int = 30522, eps: float = 1e-12):
        super().__init__()
        self.in_dim = in_dim
        self.vocab_size = vocab_size
        self.dense = nn.Linear(in_dim, in_dim)
        self.norm = nn.LayerNorm(in_dim, eps=eps)
        self.decoder = nn.Linear(in_dim, vocab_size)

    @classmethod
    def from_config(cls, cfg: MLMConfig, *, in_dim: int) -> MLMHead:
        """``cfg.hidden_dim`` (the text tokens' width) when set, else ``in_dim``."""
        _check_in_dim(cls.name, in_dim)
        return cls(cfg.hidden_dim or in_dim, vocab_size=cfg.vocab_size, eps=cfg.eps)

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        h = torch.randn(batch_size, 40, self.in_dim, generator=generator, device=generator.device).to(device)
        return {"out": InteractionOutput(last_hidden_state=h, text_len=40)}

    def forward(self, out: InteractionOutput, stage: StageFn = null_stage, **kwargs: Any) -> dict[str, torch.Tensor]:
        _need(self.name, out, "last_hidden_state", "text_len")
        _check_width(
            self.name,
            out.last_hidden_state,
            self.in_dim,
            "last_hidden_state",
            "the head's width; set the head option hidden_dim to the text-stream width, e.g. 768 for ViLBERT",
        )
        with stage(self.name):
            text = out.last_hidden_state[:, : out.text_len]  # [B, T, h] -> [B, L, h]
            return {"logits": self.decoder(self.norm(F.gelu(self.dense(text))))}


class ITCHead(_Head):
    """Dual-encoder output -> {"logits_per_image": [B_i, B_t], "logits_per_text": [B_t, B_i]}."""

    name = "itc"

    def __init__(self, in_dim: int):
        super().__init__()
        self.in_dim = in_dim

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        logits = torch.randn(batch_size, batch_size, generator=generator, device=generator.device).to(device)
        return {"out": InteractionOutput(logits_per_image=logits)}

    def forward(self, out: InteractionOutput, stage: StageFn = null_stage, **kwargs: Any) -> dict[str, torch.Tensor]:
        _need(self.name, out, "logits_per_image")
        with stage(self.name):
            return {"logits_per_image": out.logits_per_image, "logits_per_text": out.logits_per_image.t()}


class VQAHead(_Head):
    """pooler_output [B, d] -> {"logits": [B, num_answers]} via Linear(d,2d)-LayerNorm-GELU-Linear(2d,n)."""

    name = "vqa"

    def __init__(self, in_dim: int, num_answers: int = 3129):
        super().__init__()
        self.in_dim = in_dim
        self.classifier = nn.Sequential(
            nn.Linear(in_dim, 2 * in_dim), nn.LayerNorm(2 * in_dim), nn.GELU(), nn.Linear(2 * in_dim, num_answers)
        )

    def forward(self, out: InteractionOutput, stage: StageFn = null_stage, **kwargs: Any) -> dict[str, torch.Tensor]:
        _need(self.name, out, "pooler_output")
        _check_width(self.name, out.pooler_output, self.in_dim, "pooler_output")
        with stage(self.name):
            return {"logits": self.classifier(out.pooler_output)}


class NLVR2Head(_Head):
    """pooler_output of image 1 and of image 2 [B, d] each -> cat [B, 2d] -> {"logits": [B, 2]}
    via Linear(2d,2d)-LayerNorm-GELU-Linear(2d,2).  Call as ``head(out1, stage, pair=out2)``."""

    name = "nlvr2"
    images_per_example = 2

    def __init__(self, in_dim: int, num_classes: int = 2):
        super().__init__()
        self.in_dim = in_dim
        d2 = 2 * in_dim
        self.classifier = nn.Sequential(nn.Linear(d2, d2), nn.LayerNorm(d2), nn.GELU(), nn.Linear(d2, num_classes))

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        first = super().make_inputs(batch_size, generator=generator, device=device)["out"]
        second = super().make_inputs(batch_size, generator=generator, device=device)["out"]
        return {"out": first, "pair": second}

    def forward(
        self, out: InteractionOutput, stage: StageFn = null_stage, pair: InteractionOutput | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        if not isinstance(pair, InteractionOutput):
            raise VlpbenchError(
                f"invalid input for head 'nlvr2': pair={type(pair).__name__}; accepted: "
                "pair=InteractionOutput of the second image (head(out1, stage, pair=out2))"
            )
        _need(self.name, out, "pooler_output")
        _need(self.name, pair, "pooler_output")
        _check_width(self.name, out.pooler_output, self.in_dim, "pooler_output")
        if pair.pooler_output.shape != out.pooler_output.shape:
            raise bad_value(
                "input for head 'nlvr2': pair pooler_output shape",
                tuple(pair.pooler_output.shape),
                f"{tuple(out.pooler_output.shape)} like the first image's",
            )
        with stage(self.name):
            both = torch.cat([out.pooler_output, pair.pooler_output], dim=-1)  # 2 x [B, d] -> [B, 2d]
            return {"logits": self.classifier(both)}


class RetrievalHead(_Head):
    """pooler_output [B, d] -> {"scores": [B]} (ViLT's rank_output Linear(d, 1))."""

    name = "retrieval"

    def __init__(self, in_dim: int, num_negatives: int = 15):
        super().__init__()
        if num_negatives < 1:
            raise bad_value("num_negatives", num_negatives, "a positive integer")
        self.in_dim = in_dim
        self.num_negatives = num_negatives
        self.rank_output = nn.Linear(in_dim, 1)

    def forward(self, out: InteractionOutput, stage: StageFn = null_stage, **kwargs: Any) -> dict[str, torch.Tensor]:
        _need(self.name, out, "pooler_output")
        _check_width(self.name, out.pooler_output, self.in_dim, "pooler_output")
        with stage(self.name):
            return {"scores": self.rank_output(out.pooler_output).squeeze(-1)}

    def loss(self, scores: torch.Tensor) -> torch.Tensor:
        return retrieval_loss(scores, self.num_negatives)


def retrieval_loss(scores: torch.Tensor, num_negatives: int = 15) -> torch.Tensor:
    """Scores [P * (1 + N)] ordered as P groups of (positive, N negatives) -> cross-entropy, target index 0.

    ViLT's retrieval: each image with its true text and 15 sampled negative texts, 16-way softmax.
    """
    group = 1 + num_negatives
    if scores.dim() != 1 or scores.numel() == 0 or scores.numel() % group:
        raise bad_value(
            "retrieval scores shape",
            tuple(scores.shape),
            f"[P * {group}] (1 positive + {num_negatives} negatives per group)",
        )
    logits = scores.view(-1, group)  # [P*(1+N)] -> [P, 1+N]
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(logits, target)
