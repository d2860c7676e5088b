"""Seeded scenes of coloured shapes, in the manner of Sort-of-CLEVR (Santoro et al. 2017, arXiv:1706.01427).

A :class:`Scene` is a scene graph (objects with colour, shape, size, centre and box) drawn from a seed by
:func:`generate_scene`; :meth:`Scene.render` draws it with PIL. Colours are unique within a scene, so
"the red object" always names one object; shapes may repeat. Objects never overlap: positions come from
rejection sampling with a bounded number of tries and, should that run out, from a jittered grid whose
existence :meth:`SceneConfig.validate` proves up front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from vlpbench.errors import VlpbenchError, bad_value

# Every colour the generator knows, with its RGB value; a config picks a subset.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 70, 220),
    "green": (40, 170, 60),
    "orange": (245, 140, 20),
    "yellow": (230, 210, 30),
    "gray": (128, 128, 128),
    "purple": (140, 50, 180),
    "cyan": (30, 200, 210),
}
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
SIZE_NAMES: tuple[str, ...] = ("small", "large")
BACKGROUND = (255, 255, 255)
LAYOUTS: tuple[str, ...] = ("free", "cells")
MIN_CANVAS = 32
MAX_CANVAS = 1024


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Sizes are fractions of the canvas side, so one config fits any canvas."""

    canvas: int = 128  # image side in pixels (square images)
    min_objects: int = 2  # fewest objects per scene
    max_objects: int = 6  # most objects per scene (<= number of colours)
    colours: tuple[str, ...] = ("red", "blue", "green", "orange", "yellow", "gray")  # names from PALETTE
    shapes: tuple[str, ...] = SHAPE_NAMES  # names from SHAPE_NAMES
    sizes: tuple[str, ...] = SIZE_NAMES  # names from SIZE_NAMES (one size: no size words to learn)
    layout: str = "free"  # "free": anywhere; "cells": centred in cells of a grid
    grid: int = 4  # cells per side for layout "cells"
    small_radius: float = 0.06  # half-side of a small object / canvas
    large_radius: float = 0.10  # half-side of a large object / canvas
    gap: float = 0.03  # least free space between two boxes / canvas
    max_tries: int = 200  # rejection-sampling draws per object before the grid

    def radius_px(self, size: str) -> float:
        """Half-side in pixels of an object of ``size``."""
        return (self.small_radius if size == "small" else self.large_radius) * self.canvas

    def cell_px(self) -> float:
        """Side of one grid cell that holds a large object with its gap."""
        return 2 * self.radius_px("large") + self.gap * self.canvas

    def grid_cells(self) -> int:
        """How many large objects a regular grid fits on the canvas (the capacity proof)."""
        per_side = int(self.canvas // self.cell_px())
        return per_side * per_side

    def validate(self) -> SceneConfig:
        """Check every setting before anything is drawn; raise VlpbenchError naming the bad one."""
        if not isinstance(self.canvas, int) or not MIN_CANVAS <= self.canvas <= MAX_CANVAS:
            raise bad_value("canvas", self.canvas, f"an integer from {MIN_CANVAS} to {MAX_CANVAS} pixels")
        if len(self.colours) == 0:
            raise bad_value("colours", self.colours, f"one or more of {', '.join(PALETTE)}")
        unknown = [c for c in self.colours if c not in PALETTE]
        if unknown or len(set(self.colours)) != len(self.colours):
            raise bad_value("colours", self.colours, f"distinct names from {', '.join(PALETTE)}")
        if (
            len(self.shapes) == 0
            or any(s not in SHAPE_NAMES for s in self.shapes)
            or len(set(self.shapes)) != len(self.shapes)
        ):
            raise bad_value("shapes", self.shapes, f"distinct names from {', '.join(SHAPE_NAMES)}")
        if not isinstance(self.min_objects, int) or self.min_objects < 2:
            raise bad_value("min_objects", self.min_objects, "an integer >= 2 (relations need two objects)")
        if not isinstance(self.max_objects, int) or self.max_objects < self.min_objects:
            raise bad_value("max_objects", self.max_objects, f"an integer >= min_objects ({self.min_objects})")
        if self.max_objects > len(self.colours):
            raise bad_value(
                "max_objects",
                self.max_objects,
                f"at most the number of colours ({len(self.colours)}); colours are unique per scene",
            )
        if (
            len(self.sizes) == 0
            or any(z not in SIZE_NAMES for z in self.sizes)
            or len(set(self.sizes)) != len(self.sizes)
        ):
            raise bad_value("sizes", self.sizes, f"distinct names from {', '.join(SIZE_NAMES)}")
        if self.layout not in LAYOUTS:
            raise bad_value("layout", self.layout, LAYOUTS)
        if self.layout == "cells" and (
            not isinstance(self.grid, int)
            or self.grid * self.grid < self.max_objects
            or self.radius_px("large") * 2 > self.canvas / self.grid
        ):
            raise bad_value(
                "grid",
                self.grid,
                f"an integer whose grid x grid cells of {self.canvas}px / grid hold "
                f"max_objects ({self.max_objects}) large objects",
            )
        if not 0 < self.small_radius <= self.large_radius:
            raise bad_value(
                "small_radius", self.small_radius, f"0 < small_radius <= large_radius ({self.large_radius})"
            )
        if not self.large_radius < 0.5:
            raise bad_value("large_radius", self.large_radius, "a fraction of the canvas below 0.5")
        if self.gap < 0:
            raise bad_value("gap", self.gap, "a fraction of the canvas >= 0")
        if self.radius_px("small") < 2:
            least = math.ceil(2 / self.small_radius)
            raise bad_value("canvas", self.canvas, f">= {least} pixels so a small object is at least 4 pixels wide")
        if self.layout == "free" and self.max_objects > self.grid_cells():
            raise bad_value(
                "max_objects",
                self.max_objects,
                f"at most {self.grid_cells()} objects on a {self.canvas}px canvas with these sizes",
            )
        if not isinstance(self.max_tries, int) or self.max_tries < 1:
            raise bad_value("max_tries", self.max_tries, "an integer >= 1")
        return self


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene graph. Coordinates are pixels with the origin at the top left."""

    colour: str
    shape: str
    size: str
    cx: float  # centre x
    cy: float  # centre y
    radius: float  # half-side of the bounding box
    canvas: int  # side of the canvas the object lives on

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Bounding box (x1, y1, x2, y2) in pixels."""
        r = self.radius
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    @property
    def box_norm(self) -> tuple[float, float, float, float]:
        """Bounding box (x1, y1, x2, y2) divided by the canvas side, in [0, 1]."""
        return tuple(v / self.canvas for v in self.box)  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """Words naming the object, e.g. ``red square``."""
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """A scene graph plus the seed it came from; :meth:`render` draws it."""

    seed: tuple[int, ...]  # entropy the scene was drawn from
    canvas: int  # image side in pixels
    objects: list[SceneObject] = field(default_factory=list)

    def by_colour(self, colour: str) -> SceneObject:
        """The unique object of ``colour``."""
        for obj in self.objects:
            if obj.colour == colour:
                return obj
        raise KeyError(colour)

    def render_array(self) -> np.ndarray:
        """Draw the scene: uint8 [H, W, 3]."""
        image = Image.new("RGB", (self.canvas, self.canvas), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            x1, y1, x2, y2 = obj.box
            fill = PALETTE[obj.colour]
            if obj.shape == "circle":
                draw.ellipse((x1, y1, x2, y2), fill=fill)
            elif obj.shape == "square":
                draw.rectangle((x1, y1, x2, y2), fill=fill)
            else:  # triangle, apex up, filling its box
                draw.polygon([(obj.cx, y1), (x2, y2), (x1, y2)], fill=fill)
        return np.array(image, dtype=np.uint8)  # a writable copy

    def render(self) -> torch.Tensor:
        """Draw the scene as float pixel values [3, H, W] in [0, 1]."""
        array = self.render_array()  # [H, W, 3] uint8
        return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0  # -> [3, H, W]


def _free(cx: float, cy: float, r: float, placed: list[tuple[float, float, float]], gap: float) -> bool:
    """True when a box of half-side r at (cx, cy) keeps ``gap`` pixels from every placed box."""
    for px, py, pr in placed:
        if abs(cx - px) < r + pr + gap and abs(cy - py) < r + pr + gap:
            return False
    return True


def _grid_positions(config: SceneConfig, radii: list[float], rng: np.random.Generator) -> list[tuple[float, float]]:
    """Fallback placement: distinct cells of a regular grid, jittered inside each cell."""
    cell = config.cell_px()
    per_side = int(config.canvas // cell)
    margin = (config.canvas - per_side * cell) / 2
    cells = rng.permutation(per_side * per_side)[: len(radii)]
    positions = []
    for index, r in zip(cells, radii):
        row, col = divmod(int(index), per_side)
        slack = cell / 2 - r - config.gap * config.canvas / 2  # room to move while staying in the cell
        jx, jy = rng.uniform(-slack, slack, size=2) if slack > 0 else (0.0, 0.0)
        positions.append((margin + (col + 0.5) * cell + jx, margin + (row + 0.5) * cell + jy))
    return positions


def _cell_centres(config: SceneConfig, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Layout "cells": the centres of ``n`` distinct cells of a ``grid`` x ``grid`` partition of the canvas, so each
    object fills one cell of a feature map or patch grid of that size (the CNN's 4 x 4 cells at 64 px)."""
    cell = config.canvas / config.grid
    return [
        ((col + 0.5) * cell, (row + 0.5) * cell)
        for row, col in (divmod(int(k), config.grid) for k in rng.permutation(config.grid**2)[:n])
    ]


def generate_scene(config: SceneConfig, seed: int | tuple[int, ...]) -> Scene:
    """Draw one scene from ``seed`` (an int or a tuple of ints); the same seed gives the same scene."""
    config.validate()
    entropy = (seed,) if isinstance(seed, int) else tuple(seed)
    rng = np.random.default_rng(list(entropy))
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    colours = [config.colours[i] for i in rng.permutation(len(config.colours))[:n]]
    shapes = [config.shapes[int(i)] for i in rng.integers(0, len(config.shapes), size=n)]
    sizes = [config.sizes[int(i)] for i in rng.integers(0, len(config.sizes), size=n)]
    radii = [config.radius_px(s) for s in sizes]
    if config.layout == "cells":
        return Scene(
            seed=entropy,
            canvas=config.canvas,
            objects=[
                SceneObject(c, s, z, x, y, r, config.canvas)
                for c, s, z, r, (x, y) in zip(colours, shapes, sizes, radii, _cell_centres(config, n, rng))
            ],
        )
    gap = config.gap * config.canvas

    placed: list[tuple[float, float, float]] = []
    for r in radii:
        for _ in range(config.max_tries):
            cx, cy = rng.uniform(r, config.canvas - r, size=2)
            if _free(cx, cy, r, placed, gap):
                placed.append((float(cx), float(cy), r))
                break
        else:
            break
    if len(placed) < n:  # rejection sampling ran out: use the grid
        placed = [(x, y, r) for (x, y), r in zip(_grid_positions(config, radii, rng), radii)]

    objects = [
        SceneObject(c, s, z, x, y, r, config.canvas) for c, s, z, (x, y, r) in zip(colours, shapes, sizes, placed)
    ]
    return Scene(seed=entropy, canvas=config.canvas, objects=objects)


def check_scene(scene: Scene, config: SceneConfig) -> None:
    """Raise VlpbenchError if ``scene`` breaks an invariant of the generator (used by tests and loaders)."""
    colours = [o.colour for o in scene.objects]
    if len(set(colours)) != len(colours):
        raise VlpbenchError(f"scene {scene.seed}: colours repeat: {colours}")
    if not config.min_objects <= len(scene.objects) <= config.max_objects:
        raise VlpbenchError(f"scene {scene.seed}: {len(scene.objects)} objects")
    for i, a in enumerate(scene.objects):
        x1, y1, x2, y2 = a.box
        if x1 < 0 or y1 < 0 or x2 > scene.canvas or y2 > scene.canvas:
            raise VlpbenchError(f"scene {scene.seed}: object {a.name} leaves the canvas")
        if not _free(a.cx, a.cy, a.radius, [(b.cx, b.cy, b.radius) for b in scene.objects[i + 1 :]], 0.0):
            raise VlpbenchError(f"scene {scene.seed}: object {a.name} overlaps another")
