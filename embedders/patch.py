"""Patch projection visual embedder (ViLT, CLIP ViT): Conv2d(P, stride P) + class token + position embeddings.

Pipeline, one stage each: ``patch_embed`` (the convolution) -> ``pos_embed`` (interpolate the stored
position grid to the input grid, add, prepend the class token) -> ``sample`` (optional, ViLT pre-training
keeps ``max_image_len`` random patches) -> ``norm`` (optional, CLIP's ``ln_pre``).

ViLT stores position embeddings at its pre-training grid (384/32 = 12x12) and interpolates them bilinearly
(``align_corners=True``, as dandelin/ViLT and transformers' ``ViltEmbeddings.visual_embed``) to the grid
of the actual input (12x20 at 384x640).  CLIP ViT-B/32 runs at its pre-training grid (7x7 at 224).

The embedder reads pixels as its family's image processor leaves them and does not normalise them itself
(the latency benchmark times the model, not the processor).  Whoever feeds it real or generated [0, 1]
images applies :func:`processor_normalise` first, with the family's statistics in
:data:`PROCESSOR_NORMALISATION` (the trainer's ``TaskModel`` and the real-data evaluation do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.layers import CLIP_MEAN, CLIP_STD
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens

POS_INTERP = ("bilinear", "none")

# (image_mean, image_std) of each family's image processor, applied to [0, 1] pixels
PROCESSOR_NORMALISATION: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "vilt": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),                    # ViltImageProcessor (dandelin/ViLT: same)
    "clip": (CLIP_MEAN, CLIP_STD),                                   # CLIPImageProcessor
}


def processor_normalise(pixel_values: torch.Tensor, family: str) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> (x - image_mean) / image_std of ``family``'s image processor."""
    if family not in PROCESSOR_NORMALISATION:
        raise bad_value("image processor family", family, tuple(PROCESSOR_NORMALISATION))
    mean, std = (pixel_values.new_tensor(v).view(1, -1, 1, 1) for v in PROCESSOR_NORMALISATION[family])
    return (pixel_values - mean) / std


@dataclass
class PatchEmbedConfig:
    image_size: Tuple[int, int] = (384, 640)  # input (H, W) in pixels; multiples of patch_size
    patch_size: int = 32                      # P: Conv2d kernel and stride
    dim: int = 768                            # D: token width
    in_chans: int = 3                         # input channels
    pos_grid: Tuple[int, int] = (12, 12)      # grid the position embeddings are stored at (pre-training size / P)
    pos_interp: str = "bilinear"              # "bilinear" (ViLT, align_corners=True) or "none" (grid must equal pos_grid)
    conv_bias: bool = True                    # ViLT's projection has a bias, CLIP's does not
    pre_norm: bool = False                    # CLIP's ln_pre after the position embeddings
    norm_eps: float = 1e-5                    # eps of ln_pre
    max_image_len: int = -1                   # keep this many random patches (ViLT pre-training: 200); -1 = all
    sample_seed: int = 0                      # seed of the patch-sampling generator (reproducible sampling)


def vilt_resize_shape(height: int, width: int, shorter: int = 384, longer: int = int(1333 / 800 * 384),
                      patch_size: int = 32) -> Tuple[int, int]:
    """ViLT's test-time resize: shorter edge -> ``shorter``, longer edge capped at ``longer`` (639), both
    rounded down to a multiple of ``patch_size`` (dandelin/ViLT ``MinMaxResize``).  (h, w) -> (H, W):
    a 5:8 image gives (384, 608), the 12x19 grid; a 3:5 image hits the 639 cap and gives (352, 608)."""
    if min(height, width) <= 0:
        raise bad_value("image size", (height, width), "positive height and width")
    scale = shorter / min(height, width)
    h, w = height * scale, width * scale
    if max(h, w) > longer:
        scale = longer / max(h, w)
        h, w = h * scale, w * scale
    h, w = int(h + 0.5), int(w + 0.5)
    return max(patch_size, h // patch_size * patch_size), max(patch_size, w // patch_size * patch_size)


class PatchEmbedder(nn.Module):
    """pixel_values [B, C, H, W] in [0, 1] -> VisualTokens(features [B, 1 + N, D], mask [B, 1 + N])."""

    def __init__(self, image_size: Tuple[int, int] = (384, 640), patch_size: int = 32, dim: int = 768, *,
                 in_chans: int = 3, pos_grid: Optional[Tuple[int, int]] = None, pos_interp: str = "bilinear",
                 conv_bias: bool = True, pre_norm: bool = False, norm_eps: float = 1e-5, max_image_len: int = -1,
                 sample_seed: int = 0):
        super().__init__()
        image_size = tuple(int(s) for s in image_size)
        if patch_size <= 0:
            raise bad_value("patch_size", patch_size, "a positive integer")
        if len(image_size) != 2 or any(s < patch_size or s % patch_size for s in image_size):
            raise bad_value("image_size", image_size,
                            f"(H, W), each a positive multiple of patch_size {patch_size} (at least one patch)")
        if pos_interp not in POS_INTERP:
            raise bad_value("pos_interp", pos_interp, POS_INTERP)
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.dim = dim
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.pos_grid = tuple(pos_grid) if pos_grid is not None else self.grid
        if pos_interp == "none" and self.pos_grid != self.grid:
            raise bad_value("image_size", image_size,
                            f"{self.pos_grid[0] * patch_size}x{self.pos_grid[1] * patch_size} when pos_interp='none' "
                            f"(position grid {self.pos_grid}); use pos_interp='bilinear' for other sizes")
        num_patches = self.grid[0] * self.grid[1]
        if max_image_len == 0 or max_image_len < -1:
            raise bad_value("max_image_len", max_image_len, "-1 (all patches) or a positive integer")
        self.pos_interp = pos_interp
        self.max_image_len = max_image_len
        self.sample_seed = sample_seed
        self.num_kept = num_patches if max_image_len < 0 else min(max_image_len, num_patches)

        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=conv_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # [1, 1 + Gh*Gw, D]: class position first, then the stored grid in raster order
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid[0] * self.pos_grid[1], dim))
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if pre_norm else None
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self._generator: Optional[torch.Generator] = None

    @classmethod
    def from_config(cls, cfg: PatchEmbedConfig) -> "PatchEmbedder":
        return cls(cfg.image_size, cfg.patch_size, cfg.dim, in_chans=cfg.in_chans, pos_grid=cfg.pos_grid,
                   pos_interp=cfg.pos_interp, conv_bias=cfg.conv_bias, pre_norm=cfg.pre_norm, norm_eps=cfg.norm_eps,
                   max_image_len=cfg.max_image_len, sample_seed=cfg.sample_seed)

    # -- Benchmarkable -------------------------------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        return self.num_kept < self.grid[0] * self.grid[1]

    def output_spec(self) -> TokenSpec:
        return TokenSpec(dim=self.dim, num_tokens=1 + self.num_kept, has_cls=True, modality="vision")

    def workload(self) -> Dict[str, Any]:
        return {"image_size": list(self.image_size), "patch_grid": list(self.grid), "image_tokens": 1 + self.num_kept}

    def make_inputs(self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
                    ) -> Dict[str, torch.Tensor]:
        h, w = self.image_size
        return {"pixel_values": torch.rand(batch_size, self.in_chans, h, w, generator=generator,
                                           device=generator.device).to(device)}

    def reset_sampler(self) -> None:
        """Restart the patch-sampling sequence from ``sample_seed``."""
        self._generator = torch.Generator().manual_seed(self.sample_seed)

    # -- pieces --------------------------------------------------------------------------------------------
    def position_embedding(self) -> torch.Tensor:
        """The position embeddings at the input grid: [1, 1 + Gh*Gw, D]."""
        if self.grid == self.pos_grid:
            return self.pos_embed
        gh, gw = self.pos_grid
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.transpose(1, 2).reshape(1, self.dim, gh, gw)  # [1, G, D] -> [1, D, gh, gw]
        grid_pos = F.interpolate(grid_pos, size=self.grid, mode="bilinear", align_corners=True)
        grid_pos = grid_pos.flatten(2).transpose(1, 2)  # [1, D, Gh, Gw] -> [1, Gh*Gw, D]
        return torch.cat([cls_pos, grid_pos], dim=1)

    def sample_index(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """[B, K] sorted indices of the kept patches, drawn from the module's seeded generator."""
        if self._generator is None:
            self.reset_sampler()
        scores = torch.rand(batch_size, self.grid[0] * self.grid[1], generator=self._generator)
        return scores.argsort(dim=1)[:, : self.num_kept].sort(dim=1).values.to(device)

    def _check(self, pixel_values: torch.Tensor) -> None:
        want = (self.in_chans, *self.image_size)
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != want:
            got = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise bad_value("pixel_values shape", got, f"[B, {want[0]}, {want[1]}, {want[2]}] (the configured image_size)")
        if not pixel_values.is_floating_point():
            raise bad_value("pixel_values dtype", pixel_values.dtype, "a floating-point tensor in [0, 1]")

    def forward(self, pixel_values: torch.Tensor, stage: StageFn = null_stage) -> VisualTokens:
        """pixel_values [B, C, H, W] -> VisualTokens(features [B, 1 + K, D], mask [B, 1 + K] all True)."""
        self._check(pixel_values)
        b = pixel_values.shape[0]
        with stage("patch_embed"):
            x = self.proj(pixel_values.to(self.proj.weight.dtype))
            x = x.flatten(2).transpose(1, 2)  # [B, D, Gh, Gw] -> [B, Gh*Gw, D]
        with stage("pos_embed"):
            pos = self.position_embedding()
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + pos  # [B, 1 + Gh*Gw, D]
        extras: Dict[str, Any] = {"image_tokens": 1 + self.num_kept}
        if self.sampling:
            with stage("sample"):
                idx = self.sample_index(b, x.device)  # [B, K]
                kept = torch.gather(x[:, 1:], 1, idx[:, :, None].expand(-1, -1, self.dim))  # [B, K, D]
                x = torch.cat([x[:, :1], kept], dim=1)
            extras["patch_index"] = idx
        if self.norm is not None:
            with stage("norm"):
                x = self.norm(x)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return VisualTokens(features=x, mask=mask, extras=extras)


def build_patch_embedder(cfg: PatchEmbedConfig, **_: Any) -> PatchEmbedder:
    if not isinstance(cfg, PatchEmbedConfig):
        raise VlpbenchError(f"invalid config {type(cfg).__name__} for a patch embedder; accepted: PatchEmbedConfig")
    return PatchEmbedder.from_config(cfg)
