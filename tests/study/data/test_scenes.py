"""Scene generator: determinism, invariants, rendering, and up-front refusal of impossible settings."""

import math

import numpy as np
import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.study.data.scenes import SceneConfig, check_scene, generate_scene

CONFIG = SceneConfig(canvas=64)


def test_same_seed_same_scene_and_pixels():
    a, b = generate_scene(CONFIG, (7, 0, 3)), generate_scene(CONFIG, (7, 0, 3))
    assert a.objects == b.objects
    assert torch.equal(a.render(), b.render())


def test_different_seeds_differ():
    renders = [generate_scene(CONFIG, s).render_array().tobytes() for s in range(50)]
    assert len(set(renders)) == 50


@pytest.mark.parametrize("canvas", [64, 128])
def test_invariants_hold_over_many_scenes(canvas):
    config = SceneConfig(canvas=canvas)
    counts = set()
    for seed in range(300):
        scene = generate_scene(config, seed)
        check_scene(scene, config)  # unique colours, in canvas, no overlap
        counts.add(len(scene.objects))
        for o in scene.objects:
            assert o.colour in config.colours and o.shape in config.shapes and o.size in ("small", "large")
            x1, y1, x2, y2 = o.box_norm
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert math.isclose(x1 * canvas, o.box[0]) and math.isclose(y2 * canvas, o.box[3])
    assert counts == {2, 3, 4, 5, 6}


def test_render_is_float_chw_in_unit_range_and_shows_objects():
    scene = generate_scene(CONFIG, 1)
    image = scene.render()
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    array = scene.render_array()
    for o in scene.objects:  # the centre pixel carries the object's colour
        from vlpbench.study.data.scenes import PALETTE

        y, x = int(o.cy), int(o.cx)
        if o.shape == "triangle":  # apex up: the lower middle is surely inside
            y = int(o.cy + o.radius / 2)
        assert tuple(array[y, x]) == PALETTE[o.colour]


def test_grid_fallback_when_rejection_sampling_runs_out(monkeypatch):
    # One try per object with 16 possible cells and 8 large objects forces the grid often.
    from vlpbench.study.data import scenes

    calls = []
    original = scenes._grid_positions
    monkeypatch.setattr(scenes, "_grid_positions", lambda *a: calls.append(1) or original(*a))
    config = SceneConfig(
        canvas=64,
        min_objects=8,
        max_objects=8,
        max_tries=1,
        large_radius=0.1,
        small_radius=0.1,
        colours=("red", "blue", "green", "orange", "yellow", "gray", "purple", "cyan"),
    )
    for seed in range(50):
        scene = generate_scene(config, seed)
        check_scene(scene, config)
        assert len(scene.objects) == 8
    assert len(calls) == 50  # one try per object never places 8


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(colours=()), "colours"),
        (dict(colours=("red", "mauve")), "mauve"),
        (dict(colours=("red", "red", "blue")), "colours"),
        (dict(shapes=("circle", "hexagon")), "hexagon"),
        (dict(max_objects=7), "max_objects"),  # more than the six colours
        (dict(min_objects=1), "min_objects"),
        (dict(min_objects=4, max_objects=3), "max_objects"),
        (dict(canvas=16), "canvas"),
        (dict(canvas=33), "canvas"),  # small objects would be under 4 pixels
        (dict(large_radius=0.3, max_objects=3), "max_objects"),  # three large objects cannot fit
        (dict(max_tries=0), "max_tries"),
        (dict(small_radius=0.2, large_radius=0.1), "small_radius"),
    ],
)
def test_impossible_settings_raise_naming_the_value(kwargs, word):
    with pytest.raises(VlpbenchError, match=word) as info:
        generate_scene(SceneConfig(**{"canvas": 64, **kwargs}), 0)
    assert "accepted" in str(info.value)


def test_capacity_bound_is_exact_for_a_full_grid():
    config = SceneConfig(canvas=64, large_radius=0.2, small_radius=0.2, gap=0.05, min_objects=2, max_objects=4)
    assert config.grid_cells() == 4
    for seed in range(20):
        check_scene(generate_scene(config, seed), config)
    with pytest.raises(VlpbenchError, match="at most 4"):
        SceneConfig(canvas=64, large_radius=0.2, small_radius=0.2, gap=0.05, max_objects=5).validate()


def test_numpy_seed_tuple_and_int_agree():
    assert generate_scene(CONFIG, 5).objects == generate_scene(CONFIG, (5,)).objects
    assert np.array_equal(generate_scene(CONFIG, 5).render_array(), generate_scene(CONFIG, (5,)).render_array())


def test_cells_layout_centres_every_object_in_its_own_cell_with_the_configured_sizes():
    config = SceneConfig(
        canvas=64,
        min_objects=6,
        max_objects=6,
        shapes=("circle", "square"),
        sizes=("large",),
        layout="cells",
        grid=4,
        small_radius=0.09,
        large_radius=0.09,
    )
    for seed in range(30):
        scene = generate_scene(config, seed)
        check_scene(scene, config)
        cells = {(int(o.cx // 16), int(o.cy // 16)) for o in scene.objects}
        assert len(cells) == 6  # one object per cell
        assert all(o.cx % 16 == 8 and o.cy % 16 == 8 for o in scene.objects)  # centred in it
        assert {o.size for o in scene.objects} == {"large"} and {o.shape for o in scene.objects} <= {"circle", "square"}
    with pytest.raises(VlpbenchError, match="invalid grid 2"):
        SceneConfig(canvas=64, layout="cells", grid=2).validate()  # 4 cells < 6 objects
    with pytest.raises(VlpbenchError, match="invalid layout 'spiral'"):
        SceneConfig(layout="spiral").validate()
    with pytest.raises(VlpbenchError, match="invalid sizes"):
        SceneConfig(sizes=("huge",)).validate()
