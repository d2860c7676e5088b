"""CLIP's ModifiedResNet image tower (Radford et al. 2021, openai/CLIP ``model.py``).

Differences from a torchvision ResNet, all kept here:

* a 3-conv stem (3x3 convs, widths w/2, w/2, w) followed by a 2x2 average pool instead of a max pool;
* anti-aliased strided blocks: the stride is an ``AvgPool2d(stride)`` after the 3x3 conv, and the
  downsample branch is ``AvgPool2d(stride) -> 1x1 conv -> BN``;
* attention pooling: the C5 grid is flattened, its mean is prepended, a learned positional embedding
  is added, and one multi-head attention with the mean token as the only query gives the embedding.

Stages: ``stem`` (normalise + stem), ``backbone`` (layer1..4 and flattening), ``attnpool``.
The attention pool uses :class:`vlpbench.layers.Attention` in cross mode: CLIP's ``q_proj`` is ``q``,
``k_proj`` and ``v_proj`` concatenated are ``kv``, ``c_proj`` is ``proj``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlpbench.errors import bad_value
from vlpbench.layers import CLIP_MEAN, CLIP_STD, Attention
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens


@dataclass(frozen=True)
class ClipResNetConfig:
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)  # bottleneck blocks per stage (RN50)
    width: int = 64  # stem width; C5 width is 32 * width
    heads: int = 32  # attention-pool heads (CLIP: 32 * width // 64)
    output_dim: int = 1024  # embedding width from the attention pool
    image_size: int = 224  # square input side in pixels (multiple of 32)


class CLIPBottleneck(nn.Module):
    """[B, inplanes, H, W] -> [B, 4*planes, H/stride, W/stride], CLIP's anti-aliased bottleneck."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride), nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        return self.relu(y + identity)


class AttentionPool2d(nn.Module):
    """[B, N, C] grid tokens -> [B, output_dim]: the mean token attends to mean + grid (with positions)."""

    def __init__(self, num_positions: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(num_positions + 1, embed_dim) / embed_dim**0.5)
        self.attn = Attention(embed_dim, num_heads, kv_dim=embed_dim, out_dim=output_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [B, N, C] -> [B, 1+N, C]
        x = x + self.positional_embedding.to(x.dtype)
        return self.attn(x[:, :1], context=x)[:, 0]  # [B, 1, out] -> [B, out]


class ClipResNetEmbedder(nn.Module):
    """pixel_values [B, 3, S, S] in [0, 1] -> VisualTokens(features = C5 grid [B, (S/32)^2, 32*width],
    pooled = attention-pool embedding [B, output_dim]).

    ``output_spec().dim`` is the grid-token width (2048 for RN50); ``output_spec().pooled_dim`` is the
    pooled width (1024).
    """

    def __init__(
        self,
        *,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        width: int = 64,
        heads: int = 32,
        output_dim: int = 1024,
        image_size: int = 224,
    ):
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise bad_value("image_size", image_size, "a multiple of 32 (CLIP's attention pool has a fixed grid)")
        if width % 2 or (32 * width) % heads:
            raise bad_value("width/heads", (width, heads), "an even width whose C5 width 32*width divides by heads")
        self.image_size = image_size
        self.grid = image_size // 32
        self.feature_dim = width * 32
        self.pooled_dim = output_dim
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            mods = [CLIPBottleneck(inplanes, planes, stride)]
            inplanes = planes * CLIPBottleneck.expansion
            mods += [CLIPBottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(self.grid**2, self.feature_dim, heads, output_dim)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: ClipResNetConfig) -> ClipResNetEmbedder:
        if len(cfg.layers) != 4 or min(cfg.layers) < 1:
            raise bad_value("layers", cfg.layers, "four positive block counts")
        return cls(
            layers=tuple(cfg.layers),
            width=cfg.width,
            heads=cfg.heads,
            output_dim=cfg.output_dim,
            image_size=cfg.image_size,
        )

    # -- Benchmarkable -------------------------------------------------------------------------
    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        s = self.image_size
        return {
            "pixel_values": torch.rand(batch_size, 3, s, s, generator=generator, device=generator.device).to(device)
        }

    def output_spec(self) -> TokenSpec:
        return TokenSpec(
            dim=self.feature_dim,
            num_tokens=self.grid**2,
            has_boxes=False,
            has_cls=False,
            modality="vision",
            pooled=True,
            pooled_dim=self.pooled_dim,
            schema="grid",
        )

    def workload(self) -> dict[str, Any]:
        return {
            "image_size": [self.image_size, self.image_size],
            "grid": [self.grid, self.grid],
            "visual_tokens": self.grid**2,
            "pooled_dim": self.pooled_dim,
        }

    # -- forward -------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, stage: StageFn = null_stage) -> VisualTokens:
        s = self.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, s, s):
            raise bad_value("pixel_values shape", tuple(pixel_values.shape), f"[B, 3, {s}, {s}]")
        with stage("stem"):
            x = (pixel_values - self.mean) / self.std
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.avgpool(self.relu(self.bn3(self.conv3(x))))
        with stage("backbone"):
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, C, g, g]
            tokens = x.flatten(2).transpose(1, 2)  # [B, C, g, g] -> [B, g*g, C]
        with stage("attnpool"):
            pooled = self.attnpool(tokens)  # [B, output_dim]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return VisualTokens(features=tokens, mask=mask, pooled=pooled)
