"""RandAugment for the generated scenes, restricted to operations that keep every text's truth.

ViLT fine-tunes with RandAugment minus colour inversion and cutout (ViLT paper, section 4.5): inversion
changes colour words, cutout can delete the object a caption names.  The generated scenes make more ops
unsafe, so this space keeps only those that provably leave every caption, question and statement true:

* kept: Identity; Brightness and Contrast within +-10% (the palette's nearest colour of every object stays
  its own: tested); Sharpness (object interiors are flat, only edges change); TranslateX/Y by at most
  1/64 of the side (one pixel at 64 px) -- every object moves the same way, so pairwise relations hold, and
  the generator only says "left" / "top" of an object at least 5% of the side from the middle;
* dropped: Invert, Solarize, Posterize, Equalize, AutoContrast, Color (change colours); Rotate, Shear and
  horizontal / vertical flips (change left / right / above / below); cutout (removes objects).

torchvision's :class:`~torchvision.transforms.RandAugment` does the sampling (2 ops, magnitude 9 of 31
bins, as ViLT); each image gets its own ops, seeded from the trainer's per-step generator.
"""

from __future__ import annotations

import torch
from torchvision.transforms import RandAugment

AUGMENTS = ("none", "randaugment")
MAX_PHOTOMETRIC = 0.1  # Brightness / Contrast: factor in [0.9, 1.1]
MAX_SHARPNESS = 0.9
MAX_TRANSLATE = 1 / 64  # fraction of the image side


class TruthPreservingRandAugment(RandAugment):
    """RandAugment over the ops listed in the module docstring; white fill for translated borders."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
        super().__init__(
            num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins, fill=[1.0, 1.0, 1.0]
        )

    def _augmentation_space(self, num_bins: int, image_size: tuple[int, int]) -> dict[str, tuple[torch.Tensor, bool]]:
        h, w = image_size
        return {
            "Identity": (torch.tensor(0.0), False),
            "TranslateX": (torch.linspace(0.0, MAX_TRANSLATE * w, num_bins), True),
            "TranslateY": (torch.linspace(0.0, MAX_TRANSLATE * h, num_bins), True),
            "Brightness": (torch.linspace(0.0, MAX_PHOTOMETRIC, num_bins), True),
            "Contrast": (torch.linspace(0.0, MAX_PHOTOMETRIC, num_bins), True),
            "Sharpness": (torch.linspace(0.0, MAX_SHARPNESS, num_bins), True),
        }


_AUGMENT = TruthPreservingRandAugment()


def augment_batch(pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[B, 3, H, W] float in [0, 1] -> the same, each image through its own RandAugment draw.

    torchvision samples from the global RNG; it is forked and seeded from ``generator`` so a run stays
    reproducible (and resumable) without touching the caller's random state.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([_AUGMENT(img) for img in pixel_values]).clamp_(0, 1)
