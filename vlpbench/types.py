"""Structured values that travel between embedders, interactions and heads.

Shapes use B = batch, N = visual tokens, L = text tokens, D = width.
Masks are boolean with ``True`` for a real token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import bad_value

# What an embedder's tokens are (TokenSpec.schema): detector RoI features, cells of a CNN feature map, a
# linear projection of image patches (the ViLT paper's three visual-embedding schemas), or text tokens.
SCHEMAS = ("region", "grid", "patch", "text")
# How an interaction relates the two modalities (its ``family``): "dual" encoders pool each modality to one
# embedding and compare them (ViLT taxonomy classes a, b: VSE, CLIP); "fusion" models mix the tokens of both
# modalities in one transformer or through co-attention (classes c, d: ViLBERT, UNITER, ViLT).
FAMILIES = ("dual", "fusion")


@dataclass(frozen=True)
class TokenSpec:
    """What an embedder emits, declared before anything runs (cf. detectron2 ShapeSpec).

    Interactions are built against this, so any embedder can feed any interaction; the harness records
    ``schema`` with each result, so the report places a plugin's embedder by what it declares.
    """

    dim: int  # D, width of each token
    num_tokens: int | None = None  # N or L for the configured input; None if data-dependent
    has_boxes: bool = False  # VisualTokens.boxes is filled (region features)
    has_cls: bool = False  # the first token is a summary ([CLS] / class token / whole image)
    modality: str = "vision"  # "vision" or "text"
    pooled: bool = False  # the output carries a pooled vector (CLIP text tower)
    pooled_dim: int | None = None  # width of that pooled vector when it differs from dim (None = dim)
    schema: str | None = None  # one of SCHEMAS ("region", "grid", "patch", "text"); None = undeclared

    def __post_init__(self) -> None:
        if self.schema is not None and self.schema not in SCHEMAS:
            raise bad_value("token schema", self.schema, (*SCHEMAS, None))
        if self.schema is not None and (self.schema == "text") != (self.modality == "text"):
            raise bad_value(
                f"token schema for modality {self.modality!r}",
                self.schema,
                "text" if self.modality == "text" else "region, grid or patch",
            )


@dataclass
class VisualTokens:
    """Output of a visual embedder.

    features: [B, N, D]; mask: [B, N] bool; boxes: [B, N, 4] normalised (x1, y1, x2, y2) in [0, 1],
    only for region features; pooled: [B, D] when the embedder pools; extras: workload facts measured
    in the forward (e.g. ``num_proposals``), recorded by the harness.
    """

    features: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextTokens:
    """Output of a text embedder: features [B, L, D], mask [B, L] bool, optional pooled [B, D]."""

    features: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class InteractionOutput:
    """Output of an interaction.

    Dual encoders (VSE, CLIP) fill ``image_embeds`` [B, E] / ``text_embeds`` [B, E] and ``logits_per_image``
    [B, B]; fusion models (ViLBERT, ViLT) fill ``last_hidden_state`` [B, T, D] (text tokens first, then visual
    tokens, with ``text_len`` saying where the split is) and ``pooler_output`` [B, D].
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    text_len: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Benchmarkable:
    """The interface every registered module (embedder, architecture) offers the harness.

    This is documentation plus a structural check (:func:`check_benchmarkable`); modules do not
    need to inherit from it.

    * ``make_inputs(batch_size, *, generator, device) -> dict[str, Tensor]``: seeded inputs of the
      configured size (images as float pixel values in [0, 1] of the configured H x W; token ids of
      the configured length), created directly on ``device``.
    * ``forward(**inputs, stage=null_stage)``: the computation, with each timed piece inside
      ``with stage("name"):`` (see :mod:`vlpbench.stages`).
    * the stage list is not kept by hand: :func:`vlpbench.stages.stage_names` reads it off one
      recorded dry run of ``forward``.
    * ``workload() -> dict``: the configured workload (image size, text length, regions, ...).
    * embedders also have ``output_spec() -> TokenSpec`` (with its ``schema``); interactions have
      ``family`` (one of :data:`FAMILIES`) and ``output_dim``.
    """

    REQUIRED = ("make_inputs", "forward", "workload")


def check_benchmarkable(module: object) -> None:
    missing = [m for m in Benchmarkable.REQUIRED if not callable(getattr(module, m, None))]
    if missing:
        raise TypeError(f"{type(module).__name__} lacks {', '.join(missing)} required by the harness")
