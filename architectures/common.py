"""Helpers every interaction shares: seeded inputs that match two token specs, the up-front token checks,
and the box-location codes of region tokens (UNITER's feature, and a fixed sine-cosine code of the centre)."""

from __future__ import annotations

from typing import Any

import torch

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.layers import sincos_2d
from vlpbench.types import TextTokens, TokenSpec, VisualTokens

DEFAULT_TOKENS = {"vision": 36, "text": 40}  # token counts for make_inputs when a spec leaves them open


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """UNITER's location feature: boxes [B, N, 4] (x1, y1, x2, y2 in [0, 1]) -> [B, N, 7] (+ w, h, w*h)."""
    wh = boxes[..., 2:] - boxes[..., :2]  # [B, N, 2]
    return torch.cat([boxes, wh, wh[..., :1] * wh[..., 1:]], dim=-1)


# How an interaction adds a region token's box: "linear" (the papers': a Linear of the box coordinates), or
# "linear+sincos": also a fixed 2-D sine-cosine code of the box centre in units of 1 / box_grid of the image,
# the code ViLT-style patch tokens get from sine-cosine position embeddings (vlpbench.layers.sincos_2d).
BOX_CODES = ("linear", "linear+sincos")


def check_box_code(
    box_code: str, box_grid: float, width: int, freeze_visual_proj: bool = False, accepted: tuple[str, ...] = BOX_CODES
) -> None:
    """The region options an interaction shares: its box code (one of ``accepted``) and whether its visual
    projection is frozen."""
    if not isinstance(freeze_visual_proj, bool):
        raise bad_value("freeze_visual_proj", freeze_visual_proj, "true or false")
    if box_code not in accepted:
        raise bad_value("box_code", box_code, accepted)
    if "sincos" in box_code and width % 4:
        raise bad_value("width", width, f"a multiple of 4 for box_code={box_code!r} (sin and cos of x and y)")
    if isinstance(box_grid, bool) or not isinstance(box_grid, (int, float)) or not box_grid > 0:
        raise bad_value("box_grid", box_grid, "a number > 0 (grid cells per image side)")


def box_sincos(boxes: torch.Tensor, dim: int, grid: float) -> torch.Tensor:
    """boxes [B, N, 4] (x1, y1, x2, y2 in [0, 1]) -> [B, N, dim]: the sine-cosine code of the box centre,
    rows then columns, in units of 1 / ``grid`` of the image side, so that a box centred on patch (r, c) of a
    ``grid`` x ``grid`` patch grid gets that patch's sine-cosine position embedding
    (:func:`vlpbench.embedders.patch.sincos_position_embedding`)."""
    cx = (boxes[..., 0] + boxes[..., 2]) / 2 * grid - 0.5
    cy = (boxes[..., 1] + boxes[..., 3]) / 2 * grid - 0.5
    return sincos_2d(cy, cx, dim)


def random_boxes(
    batch_size: int, n: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Seeded boxes [B, N, 4] (x1, y1, x2, y2 in [0, 1]): corners in [0, 0.5), sides in [0, 0.5)."""
    xy = torch.rand(batch_size, n, 2, generator=generator, device=generator.device) * 0.5
    wh = torch.rand(batch_size, n, 2, generator=generator, device=generator.device) * 0.5
    return torch.cat([xy, xy + wh], dim=-1).to(device)


def make_interaction_inputs(
    visual_spec: TokenSpec,
    text_spec: TokenSpec,
    batch_size: int,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Seeded embedder outputs matching the specs: {"visual": VisualTokens, "text": TextTokens}."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=generator.device).to(device)

    n = visual_spec.num_tokens or DEFAULT_TOKENS["vision"]
    length = text_spec.num_tokens or DEFAULT_TOKENS["text"]
    boxes = random_boxes(batch_size, n, generator=generator, device=device) if visual_spec.has_boxes else None
    visual = VisualTokens(
        rand(batch_size, n, visual_spec.dim),
        torch.ones(batch_size, n, dtype=torch.bool, device=device),
        boxes=boxes,
        pooled=rand(batch_size, visual_spec.pooled_dim or visual_spec.dim) if visual_spec.pooled else None,
    )
    text = TextTokens(
        rand(batch_size, length, text_spec.dim),
        torch.ones(batch_size, length, dtype=torch.bool, device=device),
        pooled=rand(batch_size, text_spec.pooled_dim or text_spec.dim) if text_spec.pooled else None,
    )
    return {"visual": visual, "text": text}


def check_tokens(
    visual: VisualTokens, text: TextTokens, visual_spec: TokenSpec, text_spec: TokenSpec, same_batch: bool = True
) -> None:
    """Up-front checks that the tokens match the specs the interaction was built against (``same_batch``: one
    text per image; dual encoders score N images against M texts and pass False)."""
    if visual.features.shape[-1] != visual_spec.dim:
        raise bad_value("visual token width", visual.features.shape[-1], f"{visual_spec.dim} (the visual spec)")
    if text.features.shape[-1] != text_spec.dim:
        raise bad_value("text token width", text.features.shape[-1], f"{text_spec.dim} (the text spec)")
    if same_batch and visual.features.shape[0] != text.features.shape[0]:
        raise bad_value("batch sizes (visual, text)", (visual.features.shape[0], text.features.shape[0]), "equal sizes")
    if visual_spec.has_boxes and visual.boxes is None:
        raise VlpbenchError(
            "visual tokens carry no boxes but the visual spec has_boxes=True; accepted: VisualTokens.boxes [B, N, 4]"
        )
