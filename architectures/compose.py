"""An architecture is (visual embedder, text embedder, interaction, head), built from the registries.

``VLPModel.forward`` is the whole pipeline in four named steps, each handed a scoped stage
function so the harness records ``visual.*`` (VE), ``text.*`` (TE), ``interaction.*`` (MI) and
``head.*`` (head) without the parts knowing about each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlpbench.registry import HEAD, INTERACTION, TEXT, VISUAL
from vlpbench.stages import StageFn, null_stage, scoped
from vlpbench.types import InteractionOutput


@dataclass(frozen=True)
class ArchConfig:
    visual: str  # VISUAL registry name
    text: str  # TEXT registry name
    interaction: str  # INTERACTION registry name
    head: str | None = None  # HEAD registry name, or None for the bare interaction output
    visual_overrides: dict[str, Any] = field(default_factory=dict)  # config overrides per component
    text_overrides: dict[str, Any] = field(default_factory=dict)
    interaction_overrides: dict[str, Any] = field(default_factory=dict)
    head_overrides: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False  # build every component at its tiny (test) size


@dataclass
class VLPOutput:
    interaction: InteractionOutput
    head: dict[str, torch.Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # workload facts from every part (e.g. regions kept)


class VLPModel(nn.Module):
    def __init__(self, visual: nn.Module, text: nn.Module, interaction: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.visual = visual
        self.text = text
        self.interaction = interaction
        self.head = head

    @classmethod
    def from_config(cls, cfg: ArchConfig) -> VLPModel:
        visual = VISUAL.build(cfg.visual, tiny=cfg.tiny, **cfg.visual_overrides)
        text = TEXT.build(cfg.text, tiny=cfg.tiny, **cfg.text_overrides)
        interaction = INTERACTION.build(
            cfg.interaction,
            tiny=cfg.tiny,
            context={"visual_spec": visual.output_spec(), "text_spec": text.output_spec()},
            **cfg.interaction_overrides,
        )
        head = None
        if cfg.head is not None:
            head = HEAD.build(cfg.head, tiny=cfg.tiny, context={"in_dim": interaction.output_dim}, **cfg.head_overrides)
        return cls(visual, text, interaction, head)

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        inputs = dict(self.visual.make_inputs(batch_size, generator=generator, device=device))
        if getattr(self.head, "images_per_example", 1) == 2:  # NLVR2: [B, 2, C, H, W], two images per text
            second = self.visual.make_inputs(batch_size, generator=generator, device=device)["pixel_values"]
            inputs["pixel_values"] = torch.stack([inputs["pixel_values"], second], dim=1)
        inputs.update(self.text.make_inputs(batch_size, generator=generator, device=device))
        return inputs

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        stage: StageFn = null_stage,
        pixel_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> VLPOutput:
        """pixel_mask [B, H, W] (padded images, ViltProcessor-style) goes to the visual embedder when given;
        pixel_values [B, 2, C, H, W] (an image pair per text, NLVR2) run as :meth:`forward_pair`."""
        if pixel_values.dim() == 5:
            return self.forward_pair(pixel_values, input_ids, attention_mask, pixel_mask=pixel_mask, stage=stage)
        masks = {} if pixel_mask is None else {"pixel_mask": pixel_mask}
        visual = self.visual(pixel_values=pixel_values, stage=scoped(stage, "visual", "VE"), **masks)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, stage=scoped(stage, "text", "TE"))
        out = self.interaction(visual, text, stage=scoped(stage, "interaction", "MI"))
        head_out = None
        if self.head is not None:
            head_out = self.head(out, stage=scoped(stage, "head", "head"), **kwargs)
        extras = {**visual.extras, **text.extras, **out.extras}
        return VLPOutput(out, head_out, extras)

    def forward_pair(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        stage: StageFn = null_stage,
    ) -> VLPOutput:
        """NLVR2: pixel_values [B, 2, C, H, W] (pixel_mask [B, 2, H, W]) and one text -> the interaction once per
        image, image i with modality type i + 1 (transformers' ``ViltForImagesAndTextClassification``), then the
        head on both pooled outputs: ``head(out_1, pair=out_2)``."""
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, stage=scoped(stage, "text", "TE"))
        outs = []
        for i in range(pixel_values.shape[1]):
            masks = {} if pixel_mask is None else {"pixel_mask": pixel_mask[:, i]}
            visual = self.visual(pixel_values=pixel_values[:, i], stage=scoped(stage, "visual", "VE"), **masks)
            outs.append(self.interaction(visual, text, stage=scoped(stage, "interaction", "MI"), image_type=i + 1))
        head_out = self.head(outs[0], stage=scoped(stage, "head", "head"), pair=outs[1]) if self.head else None
        return VLPOutput(outs[0], head_out, {})

    def workload(self) -> dict[str, Any]:
        w = dict(self.visual.workload())
        w.update(self.text.workload())
        return w
