"""A worked vlpbench plugin: one new visual embedder and one architecture built from it.

``pooled-patch`` average-pools the image by ``pool`` and then projects ``patch`` x ``patch`` patches
of the pooled image, a cheaper cousin of ViLT's patch projection.  ``pooled-vilt`` puts it in front of
BERT's text embedding and ViLT's single-stream transformer.  Measure it with::

    PYTHONPATH=examples vlpbench compare --plugin pooled_patch --arch pooled-vilt,vilt --tiny

A plugin is a module that registers into vlpbench's registries when imported; ``--plugin MODULE``
imports it before anything is built (in the measuring subprocess too).  See docs/plugins.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.registry import ARCH, VISUAL
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens

VISUAL_NAME = "pooled-patch"
ARCH_NAME = "pooled-vilt"


@dataclass(frozen=True)
class PooledPatchConfig:
    image_size: tuple[int, int] = (384, 640)  # input H, W
    pool: int = 2  # average-pooling factor applied first
    patch: int = 16  # patch size on the pooled image (32 px of the input at pool 2)
    dim: int = 768  # token width D


class PooledPatchEmbedder(nn.Module):
    def __init__(self, image_size: tuple[int, int], pool: int, patch: int, dim: int) -> None:
        super().__init__()
        self.image_size, self.pool, self.patch, self.dim = tuple(image_size), pool, patch, dim
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)

    @classmethod
    def from_config(cls, cfg: PooledPatchConfig) -> PooledPatchEmbedder:
        return cls(cfg.image_size, cfg.pool, cfg.patch, cfg.dim)

    def make_inputs(self, batch_size: int, *, generator: torch.Generator, device="cpu") -> dict[str, torch.Tensor]:
        h, w = self.image_size
        return {"pixel_values": torch.rand(batch_size, 3, h, w, generator=generator, device=device)}

    def forward(self, pixel_values: torch.Tensor, stage: StageFn = null_stage) -> VisualTokens:
        with stage("pool"):
            x = F.avg_pool2d(pixel_values, self.pool)  # [B, 3, H/pool, W/pool]
        with stage("patch_embed"):
            x = self.proj(x).flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, h*w, D]
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)  # [B, 1 + h*w, D]
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return VisualTokens(x, mask, extras={"tokens": x.shape[1]})

    def stage_names(self) -> list[str]:
        return ["pool", "patch_embed"]

    def workload(self) -> dict[str, object]:
        return {"image_size": list(self.image_size)}

    def output_spec(self) -> TokenSpec:
        h, w = (s // self.pool // self.patch for s in self.image_size)
        return TokenSpec(dim=self.dim, num_tokens=1 + h * w, has_cls=True)


def register() -> None:
    """Register both names (idempotent, so importing the module twice is harmless)."""
    if VISUAL_NAME not in VISUAL:
        VISUAL.register(
            VISUAL_NAME,
            PooledPatchEmbedder.from_config,
            PooledPatchConfig(),
            tiny={"image_size": (64, 96), "dim": 64},
            tags=("patch", "plugin"),
            description="example plugin: average pool, then a 16x16 patch projection",
        )
    if ARCH_NAME not in ARCH:
        ARCH.register(
            ARCH_NAME,
            VLPModel.from_config,
            ArchConfig(visual=VISUAL_NAME, text="bert-base-embed", interaction="single-stream"),
            tiny={"tiny": True},
            tags=("plugin",),
            description="example plugin: pooled-patch + BERT embeddings + ViLT single-stream",
        )


register()
