"""RandAugment of the study keeps every object's colour name and position words true."""

from __future__ import annotations

import torch

from vlpbench.study.augment import MAX_TRANSLATE, augment_batch
from vlpbench.study.data import PALETTE, DatasetConfig, SceneConfig, SyntheticData


def _nearest_colour(rgb: torch.Tensor) -> str:
    names = list(PALETTE)
    table = torch.tensor([PALETTE[n] for n in names], dtype=torch.float32) / 255.0
    return names[int(((table - rgb) ** 2).sum(1).argmin())]


def test_augmented_objects_keep_their_colour_and_stay_in_place():
    data = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=24, n_val=2, n_test=2))
    split = data.split("train")
    images = split.images.float() / 255.0
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, images)  # something was applied
    torch.testing.assert_close(augment_batch(images, torch.Generator().manual_seed(0)), out)  # seeded
    shift = MAX_TRANSLATE * 64
    for k, scene in enumerate(split.scenes):
        for o in scene.objects:
            y, x = int(o.cy), int(o.cx)  # centre pixel: inside the object after
            assert _nearest_colour(out[k, :, y, x]) == o.colour, (k, o)  # any shift of <= 1 px
            assert shift < o.radius
    white = (images[:, :, 0, 0] == 1).all(1)  # translated borders are filled white
    assert bool((out[white][:, :, 0, 0] > 0.85).all())
