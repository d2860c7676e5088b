"""Grid-feature visual embedder: a ResNet trunk to its C5 map, read as tokens (Pixel-BERT style).

Pipeline, one named stage each::

    preprocess (ImageNet normalise) -> backbone (ResNet stem + layer1..4, stride 32; or to layer3, C4,
    stride 16; or to layer2, C3, stride 8)
    -> flatten ([B, C, h, w] -> [B, h*w, C]) -> sample (optional, Pixel-BERT) -> project (optional)

The trunk is torchvision's ResNet (Bottleneck blocks, v1.5 stride on the 3x3 conv) with random
weights and regular BatchNorm; put the module in ``eval()`` for inference timings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from vlpbench.errors import bad_value
from vlpbench.layers import IMAGENET_MEAN, IMAGENET_STD
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
MIN_SIDE = 32


@dataclass(frozen=True)
class GridConfig:
    depth: int = 50  # ResNet depth: 50, 101 or 152
    image_size: tuple[int, int] = (800, 1333)  # input [H, W] in pixels
    channels_last: bool = False  # run the trunk in NHWC memory format (faster on CPU)
    pool: int = 1  # max-pool the C5 map with this kernel and stride (1 = none)
    sample_tokens: int | None = None  # Pixel-BERT: keep this many random grid positions; None = all
    sample_seed: int = 0  # seed of the position sampling (same positions every call)
    out_dim: int | None = None  # Linear projection of the 2048-d (C4: 1024-d, C3: 512-d) tokens; None = no projection
    blocks: tuple[int, int, int, int] | None = None  # blocks per stage; None = the standard ones for `depth`
    width_per_group: int = 64  # bottleneck width per 64 planes (64 = standard; tests shrink it)
    # emit each token's grid cell as its box (VisualTokens.boxes, normalised x1, y1, x2, y2), so that an
    # interaction's box code tells it where the token sits.  Not Pixel-BERT's: it adds no position to its pixel
    # tokens (Huang et al. 2020, section 3.2), and an interaction's attention is blind to token order.
    cell_boxes: bool = False
    # the map read as tokens: 5 = C5 (layer4, stride 32, 2048-d; Pixel-BERT's), 4 = C4 (layer3, stride 16,
    # 1024-d), 3 = C3 (layer2, stride 8, 512-d): finer grids for small images, where a C5 cell covers a
    # quarter of a 64 px canvas
    out_stage: int = 5
    # keep the trunk at its random initialisation (no gradient; BatchNorm still normalises each batch), as the
    # study's calibration references keep their CNN (vlpbench.study.relational, freeze_cnn)
    freeze_trunk: bool = False


OUT_STAGES = {3: 512, 4: 1024, 5: 2048}  # output stage -> token width (Bottleneck expansion 4 x 128 / 256 / 512)


def grid_shape(image_size: tuple[int, int], out_stage: int = 5) -> tuple[int, int]:
    """[H, W] pixels -> [h, w] of the C5 (stride 32), C4 (stride 16) or C3 (stride 8) map, as the conv arithmetic
    gives (one halving per stage, each a ceil)."""
    h, w = image_size
    for _ in range(out_stage):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def _resnet_trunk(blocks: tuple[int, int, int, int], width_per_group: int, out_stage: int = 5) -> nn.Sequential:
    """torchvision ResNet (Bottleneck) without avgpool/fc: [B, 3, H, W] -> [B, 2048, H/32, W/32] (C5), or
    without layer4 -> [B, 1024, H/16, W/16] (C4), or also without layer3 -> [B, 512, H/8, W/8] (C3)."""
    net = ResNet(Bottleneck, list(blocks), width_per_group=width_per_group)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    layers = [net.layer1, net.layer2, net.layer3, net.layer4][: out_stage - 1]
    return nn.Sequential(stem, *layers)


class GridEmbedder(nn.Module):
    """ResNet C5 grid features as visual tokens.

    forward: pixel_values [B, 3, H, W] in [0, 1] -> VisualTokens(features [B, N, D], mask [B, N]),
    N = h*w (or ``sample_tokens``), D = 2048 (or ``out_dim``).
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        image_size: tuple[int, int],
        feature_dim: int = 2048,
        channels_last: bool = False,
        pool: int = 1,
        sample_tokens: int | None = None,
        sample_seed: int = 0,
        out_dim: int | None = None,
        depth: int | None = None,
        cell_boxes: bool = False,
        out_stage: int = 5,
        freeze_trunk: bool = False,
    ):
        super().__init__()
        if out_stage not in OUT_STAGES:
            raise bad_value("out_stage", out_stage, sorted(OUT_STAGES))
        h, w = (int(s) for s in image_size)
        if h < MIN_SIDE or w < MIN_SIDE:
            raise bad_value("image_size", [h, w], f"both sides >= {MIN_SIDE} px (the ResNet trunk has stride 32)")
        self.image_size = (h, w)
        self.out_stage = out_stage
        c5 = grid_shape(self.image_size, out_stage)
        if not isinstance(pool, int) or not 1 <= pool <= min(c5):
            raise bad_value(
                "pool", pool, f"an integer from 1 to {min(c5)} (the C{out_stage} grid is {c5[0]}x{c5[1]} at {h}x{w})"
            )
        self.pool = pool
        self.grid = (c5[0] // pool, c5[1] // pool)  # tokens after the optional max-pool
        n = self.grid[0] * self.grid[1]
        if sample_tokens is not None and not 0 < sample_tokens <= n:
            raise bad_value(
                "sample_tokens", sample_tokens, f"1..{n} (the {self.grid[0]}x{self.grid[1]} grid at {h}x{w})"
            )
        if out_dim is not None and out_dim <= 0:
            raise bad_value("out_dim", out_dim, "a positive width or None")
        if not isinstance(cell_boxes, bool):
            raise bad_value("cell_boxes", cell_boxes, "true or false")
        if not isinstance(freeze_trunk, bool):
            raise bad_value("freeze_trunk", freeze_trunk, "true or false")
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.channels_last = channels_last
        self.sample_tokens = sample_tokens
        self.sample_seed = sample_seed
        self.depth = depth
        self.cell_boxes = cell_boxes
        self.proj = nn.Linear(feature_dim, out_dim) if out_dim is not None else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if channels_last:
            self.trunk.to(memory_format=torch.channels_last)
        self.freeze_trunk = False
        if freeze_trunk:
            self.freeze()

    def freeze(self) -> None:
        """Keep the trunk at its present weights: no gradient (BatchNorm still normalises each batch)."""
        self.trunk.requires_grad_(False)
        self.freeze_trunk = True

    @classmethod
    def from_config(cls, cfg: GridConfig) -> GridEmbedder:
        if cfg.blocks is None and cfg.depth not in RESNET_BLOCKS:
            raise bad_value("depth", cfg.depth, sorted(RESNET_BLOCKS))
        blocks = tuple(cfg.blocks) if cfg.blocks is not None else RESNET_BLOCKS[cfg.depth]
        if len(blocks) != 4 or min(blocks) < 1:
            raise bad_value("blocks", blocks, "four positive block counts")
        if cfg.out_stage not in OUT_STAGES:
            raise bad_value("out_stage", cfg.out_stage, sorted(OUT_STAGES))
        trunk = _resnet_trunk(blocks, cfg.width_per_group, cfg.out_stage)
        return cls(
            trunk,
            image_size=cfg.image_size,
            feature_dim=OUT_STAGES[cfg.out_stage],
            out_stage=cfg.out_stage,
            freeze_trunk=cfg.freeze_trunk,
            channels_last=cfg.channels_last,
            pool=cfg.pool,
            sample_tokens=cfg.sample_tokens,
            sample_seed=cfg.sample_seed,
            out_dim=cfg.out_dim,
            depth=cfg.depth,
            cell_boxes=cfg.cell_boxes,
        )

    # -- Benchmarkable -------------------------------------------------------------------------
    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        x = torch.rand(batch_size, 3, *self.image_size, generator=generator, device=generator.device)
        return {"pixel_values": x.to(device)}

    def output_spec(self) -> TokenSpec:
        n = self.sample_tokens or self.grid[0] * self.grid[1]
        dim = self.proj.out_features if self.proj is not None else self.feature_dim
        return TokenSpec(
            dim=dim, num_tokens=n, has_boxes=self.cell_boxes, has_cls=False, modality="vision", schema="grid"
        )

    def workload(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "grid": list(self.grid),
            "pool": self.pool,
            "backbone": f"resnet{self.depth}",
            "feature_map": f"C{self.out_stage}",
            "visual_tokens": self.output_spec().num_tokens,
            "sample_tokens": self.sample_tokens,
            "channels_last": self.channels_last,
        }

    # -- forward -------------------------------------------------------------------------------
    def _sample_index(self, batch: int, n: int, device: torch.device) -> torch.Tensor:
        """Seeded random positions, distinct within each image: -> [B, K] indices into the N grid positions."""
        gen = torch.Generator(device="cpu").manual_seed(self.sample_seed)
        idx = torch.rand(batch, n, generator=gen).argsort(dim=1)[:, : self.sample_tokens]
        return idx.to(device)

    @staticmethod
    def grid_boxes(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        """An h x w grid's cells, row-major as the tokens: -> [h*w, 4] (x1, y1, x2, y2, in [0, 1])."""
        ys = torch.arange(h, dtype=torch.float32, device=device) / h
        xs = torch.arange(w, dtype=torch.float32, device=device) / w
        y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([x1, y1, x1 + 1 / w, y1 + 1 / h], dim=-1).reshape(h * w, 4)

    def forward(self, pixel_values: torch.Tensor, stage: StageFn = null_stage) -> VisualTokens:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise bad_value("pixel_values shape", tuple(pixel_values.shape), "[B, 3, H, W]")
        if tuple(pixel_values.shape[-2:]) != self.image_size:
            raise bad_value("image size", list(pixel_values.shape[-2:]), f"the configured {list(self.image_size)}")
        with stage("preprocess"):
            x = (pixel_values - self.mean) / self.std
        with stage("backbone"):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            fmap = self.trunk(x)  # [B, C, h, w]
        if self.pool > 1:
            with stage("pool"):
                fmap = F.max_pool2d(fmap, self.pool)  # [B, C, h, w] -> [B, C, h/p, w/p]
        with stage("flatten"):
            b, c, h, w = fmap.shape
            tokens = fmap.permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, C, h, w] -> [B, h*w, C]
            boxes = None
            if self.cell_boxes:
                boxes = self.grid_boxes(h, w, tokens.device).to(tokens.dtype).expand(b, -1, -1)  # [B, h*w, 4]
        if self.sample_tokens is not None:
            with stage("sample"):
                idx = self._sample_index(b, h * w, tokens.device)  # [B, K]
                tokens = tokens.gather(1, idx[:, :, None].expand(-1, -1, c))  # [B, N, C] -> [B, K, C]
                if boxes is not None:
                    boxes = boxes.gather(1, idx[:, :, None].expand(-1, -1, 4))  # [B, N, 4] -> [B, K, 4]
        if self.proj is not None:
            with stage("project"):
                tokens = self.proj(tokens)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return VisualTokens(features=tokens, mask=mask, boxes=boxes, extras={"grid": [h, w]})
