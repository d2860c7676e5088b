"""Patch projection visual embedder (ViLT, CLIP ViT): Conv2d(P, stride P) + class token + position embeddings.

Pipeline, one stage each: ``patch_embed`` (the convolution) -> ``pos_embed`` (interpolate the stored
position grid to the input grid, add, prepend the class token) -> ``sample`` (optional, ViLT pre-training
keeps ``max_image_len`` random patches) -> ``norm`` (optional, CLIP's ``ln_pre``).

ViLT stores position embeddings at its pre-training grid (384/32 = 12x12) and interpolates them bilinearly
(``align_corners=True``, as dandelin/ViLT and transformers' ``ViltEmbeddings.visual_embed``) to the grid
of the actual input (12x20 at 384x640).  CLIP ViT-B/32 runs at its pre-training grid (7x7 at 224), or at
another size with transformers' ``interpolate_pos_encoding`` (bicubic, ``align_corners=False``).

A padded batch (``ViltProcessor``: images of different sizes zero-padded at the bottom and right, with a
``pixel_mask``) is embedded as transformers' ViLT does: each image gets the position grid resized to its own
valid patch rows and columns, and patches that are all padding are masked out of attention (``mask`` False).
:func:`vilt_preprocess` gives such a batch from images of any size.

The embedder reads pixels as its family's image processor leaves them and does not normalise them itself
(the latency benchmark times the model, not the processor).  Whoever feeds it real or generated [0, 1]
images applies :func:`processor_normalise` first, with the family's statistics in
:data:`PROCESSOR_NORMALISATION` (the trainer's ``TaskModel`` and the real-data evaluation do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.errors import bad_value
from vlpbench.layers import CLIP_MEAN, CLIP_STD, sincos_2d
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TokenSpec, VisualTokens

# how the stored position grid meets another input grid: ViLT's bilinear (align_corners=True), transformers CLIP's
# interpolate_pos_encoding (bicubic, align_corners=False), or "none" (the input grid must be the stored grid)
POS_INTERP = ("bilinear", "bicubic", "none")
POS_ALIGN = {"bilinear": True, "bicubic": False}

# (image_mean, image_std) of each family's image processor, applied to [0, 1] pixels
PROCESSOR_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "vilt": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # ViltImageProcessor (dandelin/ViLT: same)
    "clip": (CLIP_MEAN, CLIP_STD),  # CLIPImageProcessor
}


def processor_normalise(pixel_values: torch.Tensor, family: str) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> (x - image_mean) / image_std of ``family``'s image processor."""
    if family not in PROCESSOR_NORMALISATION:
        raise bad_value("image processor family", family, tuple(PROCESSOR_NORMALISATION))
    mean, std = (pixel_values.new_tensor(v).view(1, -1, 1, 1) for v in PROCESSOR_NORMALISATION[family])
    return (pixel_values - mean) / std


@dataclass(frozen=True)
class PatchEmbedConfig:
    image_size: tuple[int, int] = (384, 640)  # input (H, W) in pixels; multiples of patch_size
    patch_size: int = 32  # P: Conv2d kernel and stride
    dim: int = 768  # D: token width
    in_chans: int = 3  # input channels
    pos_grid: tuple[int, int] = (12, 12)  # grid the position embeddings are stored at (pre-training size / P)
    pos_interp: str = "bilinear"  # "bilinear" (ViLT), "bicubic" (CLIP interpolate_pos_encoding) or "none"
    conv_bias: bool = True  # ViLT's projection has a bias, CLIP's does not
    pre_norm: bool = False  # CLIP's ln_pre after the position embeddings
    norm_eps: float = 1e-5  # eps of ln_pre
    max_image_len: int = -1  # keep this many random patches (ViLT pre-training: 200); -1 = all
    sample_seed: int = 0  # seed of the patch-sampling generator (reproducible sampling)
    pos_std: float = 0.02  # std of the position embeddings' truncated-normal init (ViLT, timm: 0.02)
    pos_init: str = "normal"  # "normal" (truncated normal, pos_std) or "sincos" (2-D sine-cosine values, as MAE)
    freeze_proj: bool = False  # keep the patch projection at its initialisation (no gradient)


def vilt_resize_shape(
    height: int, width: int, shorter: int = 384, longer: int = int(1333 / 800 * 384), patch_size: int = 32
) -> tuple[int, int]:
    """ViLT's test-time resize, as transformers' ``ViltImageProcessor`` computes it (and dandelin/ViLT's
    ``MinMaxResize``): shorter edge -> ``shorter``, longer edge capped at ``longer`` (639), both rounded to the
    nearest pixel and then down to a multiple of ``patch_size``.  (h, w) -> (H, W): a 5:8 image gives (384, 608),
    the 12x19 grid; a 3:5 image hits the 639 cap and gives (352, 608)."""
    if min(height, width) <= 0:
        raise bad_value("image size", (height, width), "positive height and width")
    if height < width:
        h, w = float(shorter), width * (shorter / height)
    else:
        h, w = height * (shorter / width), float(shorter)
    if max(h, w) > longer:
        scale = longer / max(h, w)
        h, w = h * scale, w * scale
    h, w = int(h + 0.5), int(w + 0.5)
    return max(patch_size, h // patch_size * patch_size), max(patch_size, w // patch_size * patch_size)


def vilt_preprocess(
    images: Sequence[torch.Tensor], shorter: int = 384, patch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ViltProcessor``'s image side: uint8 images [3, h_i, w_i] -> resized with bicubic (antialiased)
    interpolation to :func:`vilt_resize_shape`, scaled to [0, 1], normalised with ViLT's mean / std, zero-padded
    at the bottom and right to the largest height and width in the batch.  -> pixel_values [B, 3, H, W] (ready
    for the embedder), pixel_mask [B, H, W] (1 = real pixel, int64)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    if not images:
        raise bad_value("images", 0, "at least one image")
    resized = []
    for img in images:
        if not torch.is_tensor(img) or img.dim() != 3 or img.dtype != torch.uint8 or img.shape[0] != 3:
            got = (tuple(img.shape), str(img.dtype)) if torch.is_tensor(img) else type(img).__name__
            raise bad_value("image for vilt_preprocess", got, "a uint8 RGB tensor [3, h, w]")
        size = vilt_resize_shape(img.shape[1], img.shape[2], shorter, int(1333 / 800 * shorter), patch_size)
        resized.append(TF.resize(img, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True))
    hmax, wmax = max(r.shape[1] for r in resized), max(r.shape[2] for r in resized)
    pixels = torch.zeros(len(resized), 3, hmax, wmax)
    mask = torch.zeros(len(resized), hmax, wmax, dtype=torch.long)
    for i, r in enumerate(resized):
        pixels[i, :, : r.shape[1], : r.shape[2]] = processor_normalise(r[None].float() / 255.0, "vilt")[0]
        mask[i, : r.shape[1], : r.shape[2]] = 1
    return pixels, mask


POS_INITS = ("normal", "sincos")


def sincos_position_embedding(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sine-cosine position embeddings (:func:`vlpbench.layers.sincos_2d` of the patch rows and columns, as
    MAE's ``get_2d_sincos_pos_embed``): [1, 1 + Gh*Gw, dim], the class position zero, then the grid in raster
    order."""
    if dim % 4:
        raise bad_value("dim", dim, "a multiple of 4 for pos_init='sincos' (sin and cos of rows and columns)")
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    table = sincos_2d(rows.flatten().double(), cols.flatten().double(), dim, temperature).float()  # [G, D]
    return torch.cat([torch.zeros(1, dim), table])[None]


class PatchEmbedder(nn.Module):
    """pixel_values [B, C, H, W] in [0, 1] -> VisualTokens(features [B, 1 + N, D], mask [B, 1 + N])."""

    def __init__(
        self,
        image_size: tuple[int, int] = (384, 640),
        patch_size: int = 32,
        dim: int = 768,
        *,
        in_chans: int = 3,
        pos_grid: tuple[int, int] | None = None,
        pos_interp: str = "bilinear",
        conv_bias: bool = True,
        pre_norm: bool = False,
        norm_eps: float = 1e-5,
        max_image_len: int = -1,
        sample_seed: int = 0,
        pos_std: float = 0.02,
        pos_init: str = "normal",
        freeze_proj: bool = False,
    ):
        super().__init__()
        image_size = tuple(int(s) for s in image_size)
        if patch_size <= 0:
            raise bad_value("patch_size", patch_size, "a positive integer")
        if len(image_size) != 2 or any(s < patch_size or s % patch_size for s in image_size):
            raise bad_value(
                "image_size",
                image_size,
                f"(H, W), each a positive multiple of patch_size {patch_size} (at least one patch)",
            )
        if pos_interp not in POS_INTERP:
            raise bad_value("pos_interp", pos_interp, POS_INTERP)
        if not (isinstance(pos_std, (int, float)) and pos_std > 0):
            raise bad_value("pos_std", pos_std, "a positive number (the position embeddings' init std)")
        if pos_init not in POS_INITS:
            raise bad_value("pos_init", pos_init, POS_INITS)
        if not isinstance(freeze_proj, bool):
            raise bad_value("freeze_proj", freeze_proj, "true or false")
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.dim = dim
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.pos_grid = tuple(pos_grid) if pos_grid is not None else self.grid
        if pos_interp == "none" and self.pos_grid != self.grid:
            raise bad_value(
                "image_size",
                image_size,
                f"{self.pos_grid[0] * patch_size}x{self.pos_grid[1] * patch_size} when pos_interp='none' "
                f"(position grid {self.pos_grid}); use pos_interp='bilinear' for other sizes",
            )
        num_patches = self.grid[0] * self.grid[1]
        if max_image_len == 0 or max_image_len < -1:
            raise bad_value("max_image_len", max_image_len, "-1 (all patches) or a positive integer")
        self.pos_interp = pos_interp
        self.max_image_len = max_image_len
        self.sample_seed = sample_seed
        self.num_kept = num_patches if max_image_len < 0 else min(max_image_len, num_patches)

        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=conv_bias)
        if freeze_proj:
            self.proj.requires_grad_(False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # [1, 1 + Gh*Gw, D]: class position first, then the stored grid in raster order
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid[0] * self.pos_grid[1], dim))
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if pre_norm else None
        if pos_init == "sincos":
            with torch.no_grad():
                self.pos_embed.copy_(sincos_position_embedding(self.pos_grid, dim))
        else:
            nn.init.trunc_normal_(self.pos_embed, std=pos_std)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self._generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, cfg: PatchEmbedConfig) -> PatchEmbedder:
        return cls(
            cfg.image_size,
            cfg.patch_size,
            cfg.dim,
            in_chans=cfg.in_chans,
            pos_grid=cfg.pos_grid,
            pos_interp=cfg.pos_interp,
            conv_bias=cfg.conv_bias,
            pre_norm=cfg.pre_norm,
            norm_eps=cfg.norm_eps,
            max_image_len=cfg.max_image_len,
            sample_seed=cfg.sample_seed,
            pos_std=cfg.pos_std,
            pos_init=cfg.pos_init,
            freeze_proj=cfg.freeze_proj,
        )

    # -- Benchmarkable -------------------------------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        return self.num_kept < self.grid[0] * self.grid[1]

    def output_spec(self) -> TokenSpec:
        return TokenSpec(dim=self.dim, num_tokens=1 + self.num_kept, has_cls=True, modality="vision", schema="patch")

    def workload(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "patch_grid": list(self.grid), "image_tokens": 1 + self.num_kept}

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        h, w = self.image_size
        return {
            "pixel_values": torch.rand(
                batch_size, self.in_chans, h, w, generator=generator, device=generator.device
            ).to(device)
        }

    def reset_sampler(self) -> None:
        """Restart the patch-sampling sequence from ``sample_seed``."""
        self._generator = torch.Generator().manual_seed(self.sample_seed)

    # -- pieces --------------------------------------------------------------------------------------------
    def position_embedding(self, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The position embeddings at ``grid`` (default: the configured input grid): [1, 1 + Gh*Gw, D]."""
        grid = self.grid if grid is None else tuple(grid)
        if grid == self.pos_grid:
            return self.pos_embed
        return torch.cat([self.pos_embed[:, :1], self._grid_pos(grid).flatten(2).transpose(1, 2)], dim=1)

    def _grid_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        """The stored grid position embeddings resized to ``grid``: [1, D, Gh, Gw]."""
        gh, gw = self.pos_grid
        grid_pos = self.pos_embed[:, 1:].transpose(1, 2).reshape(1, self.dim, gh, gw)  # [1, G, D] -> [1, D, gh, gw]
        if tuple(grid) == self.pos_grid and self.pos_interp == "bicubic":
            return grid_pos
        return F.interpolate(grid_pos, size=tuple(grid), mode=self.pos_interp, align_corners=POS_ALIGN[self.pos_interp])

    def padded_position_embedding(self, pixel_mask: torch.Tensor, grid: tuple[int, int]):
        """Per-image position embeddings of a padded batch, as transformers' ``ViltEmbeddings.visual_embed``:
        pixel_mask [B, H, W] -> (pos [B, 1 + Gh*Gw, D], patch mask [B, Gh*Gw] bool).

        The pixel mask is sampled (nearest) at the patch grid; image i covers h_i valid patch rows (counted in the
        first column) and w_i valid columns (first row); the stored grid is resized to (h_i, w_i) and zero-padded
        to the batch grid, so each image sees the position embeddings of its own size."""
        patch = F.interpolate(pixel_mask[:, None].float(), size=grid)[:, 0]  # [B, H, W] -> [B, Gh, Gw], nearest
        rows, cols = patch[:, :, 0].sum(1).long(), patch[:, 0, :].sum(1).long()  # [B] valid rows / columns
        if bool((rows == 0).any() or (cols == 0).any()):
            raise bad_value(
                "pixel_mask",
                "an image with no valid patch",
                "at least one real patch per image "
                f"(a {self.patch_size}x{self.patch_size} block of ones at the top left)",
            )
        pos = self.pos_embed.new_zeros(pixel_mask.shape[0], self.dim, *grid)  # [B, D, Gh, Gw]
        for h, w in {(int(h), int(w)) for h, w in zip(rows, cols)}:
            same = (rows == h) & (cols == w)
            pos[same, :, :h, :w] = self._grid_pos((h, w))
        pos = torch.cat([self.pos_embed[:, :1].expand(pos.shape[0], -1, -1), pos.flatten(2).transpose(1, 2)], dim=1)
        return pos, patch.flatten(1).bool()

    def sample_index(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """[B, K] sorted indices of the kept patches, drawn from the module's seeded generator."""
        if self._generator is None:
            self.reset_sampler()
        scores = torch.rand(batch_size, self.grid[0] * self.grid[1], generator=self._generator)
        return scores.argsort(dim=1)[:, : self.num_kept].sort(dim=1).values.to(device)

    def input_grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """The patch grid of ``pixel_values``; any multiple of the patch size when position embeddings are
        interpolated, else only the configured image size (an error otherwise)."""
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4 or pixel_values.shape[1] != self.in_chans:
            got = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise bad_value("pixel_values shape", got, f"[B, {self.in_chans}, H, W]")
        if not pixel_values.is_floating_point():
            raise bad_value("pixel_values dtype", pixel_values.dtype, "a floating-point tensor")
        h, w = pixel_values.shape[2:]
        p = self.patch_size
        if (h, w) == self.image_size:
            return self.grid
        if self.pos_interp == "none":
            raise bad_value(
                "pixel_values size",
                (h, w),
                f"{self.image_size[0]}x{self.image_size[1]}: this embedder "
                "stores its position embeddings at that size and does not interpolate them (build it "
                "with pos_interp='bicubic', e.g. load_clip(dir, image_size=(H, W)), for other sizes)",
            )
        if self.sampling or h % p or w % p or h < p or w < p:
            raise bad_value(
                "pixel_values size",
                (h, w),
                f"H and W multiples of the patch size {p}"
                + (f", or exactly {self.image_size} with patch sampling" if self.sampling else ""),
            )
        return h // p, w // p

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None, stage: StageFn = null_stage
    ) -> VisualTokens:
        """pixel_values [B, C, H, W], pixel_mask [B, H, W] (1 = real pixel; None = all real) ->
        VisualTokens(features [B, 1 + K, D], mask [B, 1 + K]: False at patches that are all padding)."""
        grid = self.input_grid(pixel_values)
        b = pixel_values.shape[0]
        if pixel_mask is not None and (tuple(pixel_mask.shape) != (b, *pixel_values.shape[2:]) or self.sampling):
            raise bad_value(
                "pixel_mask shape",
                tuple(pixel_mask.shape),
                f"[B, H, W] = {(b, *pixel_values.shape[2:])}"
                + (" and max_image_len=-1 (no patch sampling)" if self.sampling else ""),
            )
        with stage("patch_embed"):
            x = self.proj(pixel_values.to(self.proj.weight.dtype))
            x = x.flatten(2).transpose(1, 2)  # [B, D, Gh, Gw] -> [B, Gh*Gw, D]
        with stage("pos_embed"):
            patches = None
            if pixel_mask is None or bool(pixel_mask.all()):
                pos = self.position_embedding(grid)
            elif self.pos_interp == "none":
                raise bad_value("pixel_mask", "padded images", "no padding for an embedder with pos_interp='none'")
            else:
                pos, patches = self.padded_position_embedding(pixel_mask, grid)
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + pos  # [B, 1 + Gh*Gw, D]
        extras: dict[str, Any] = {"image_tokens": x.shape[1] if not self.sampling else 1 + self.num_kept}
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
        if patches is not None:
            mask[:, 1:] = patches
        return VisualTokens(features=x, mask=mask, extras=extras)
