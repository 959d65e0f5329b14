"""The ``shapes`` test bed: procedural RGB images of coloured shapes, captioned, any size.

A class is one combination of attributes (shape, colour, position), so the number of classes is the
product of the attribute lists chosen: the default 5 shapes x 5 colours x 2 positions gives 50 classes.
Every image varies within its class: the shape's size and sub-position jitter, its colour's brightness,
the background's grey level and pixel noise. Nothing is downloaded; a seed fixes everything.

Images are (3, size, size) in [0, 1]; :func:`load` returns them flattened, like ``digits``, with the
image shape alongside. Captions ("a red circle on the left") serve text-conditioned chapters.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from distillbook.testbeds.digits import Split

SHAPES = ("square", "circle", "triangle", "diamond", "cross", "ring", "bar", "plus")
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.3, 0.95), "yellow": (0.95, 0.85, 0.1),
           "magenta": (0.85, 0.1, 0.85), "cyan": (0.1, 0.85, 0.9), "orange": (1.0, 0.55, 0.05),
           "white": (0.95, 0.95, 0.95)}
POSITIONS = {"left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7)}


@dataclass(frozen=True)
class Attributes:
    shapes: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta")
    positions: tuple[str, ...] = ("left", "right")

    def __post_init__(self):
        for name, given, allowed in (("shapes", self.shapes, SHAPES), ("colours", self.colours, COLOURS),
                                     ("positions", self.positions, POSITIONS)):
            unknown = [g for g in given if g not in allowed]
            if not given or unknown or len(set(given)) != len(given):
                raise ValueError(f"{name}={list(given)}: give distinct values from {', '.join(allowed)}")

    @property
    def classes(self) -> list[tuple[str, str, str]]:
        """(shape, colour, position) of every class, in class-id order."""
        return list(itertools.product(self.shapes, self.colours, self.positions))

    @property
    def n_classes(self) -> int:
        return len(self.shapes) * len(self.colours) * len(self.positions)

    def caption(self, label: int) -> str:
        shape, colour, position = self.classes[label]
        return f"a {colour} {shape} on the {position}" if position in ("left", "right") else \
            f"a {colour} {shape} at the {position}"


def _mask(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Boolean mask of ``shape`` centred at the origin of (dx, dy) with radius r (per image)."""
    ax, ay = dx.abs(), dy.abs()
    if shape == "square":
        return torch.maximum(ax, ay) <= 0.8 * r
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "triangle":  # apex up
        return (dy <= 0.8 * r) & (ax <= (dy + r) / 2)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":  # an X
        return (((dx - dy).abs() <= 0.3 * r) | ((dx + dy).abs() <= 0.3 * r)) & (torch.maximum(ax, ay) <= r)
    if shape == "ring":
        d2 = dx ** 2 + dy ** 2
        return (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
    if shape == "bar":
        return (ax <= r) & (ay <= 0.3 * r)
    return ((ax <= 0.25 * r) & (ay <= r)) | ((ay <= 0.25 * r) & (ax <= r))  # plus


def render(labels: torch.Tensor, attributes: Attributes, size: int, generator: torch.Generator) -> torch.Tensor:
    """Images (n, 3, size, size) in [0, 1] of the classes ``labels``, with per-image jitter from ``generator``."""
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    n = len(labels)
    classes = attributes.classes
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    radius = 0.13 + 0.06 * torch.rand(n, generator=generator)
    jitter = 0.05 * (2 * torch.rand(n, 2, generator=generator) - 1)
    brightness = 0.75 + 0.25 * torch.rand(n, generator=generator)
    background = 0.25 * torch.rand(n, generator=generator)
    noise = 0.04 * torch.randn(n, 3, size, size, generator=generator)
    images = background[:, None, None, None].expand(n, 3, size, size).clone()
    for i, label in enumerate(labels.tolist()):
        shape, colour, position = classes[label]
        cx, cy = POSITIONS[position]
        mask = _mask(shape, gx - cx - jitter[i, 0], gy - cy - jitter[i, 1], radius[i])
        rgb = brightness[i] * torch.tensor(COLOURS[colour])
        images[i] = torch.where(mask, rgb[:, None, None], images[i])
    return (images + noise).clamp(0, 1)


@dataclass(frozen=True)
class Shapes:
    train: Split
    val: Split
    test: Split
    image_shape: tuple[int, int, int]
    attributes: Attributes

    @property
    def n_classes(self) -> int:
        return self.attributes.n_classes


def load(seed: int, size: int = 32, attributes: Attributes = Attributes(), train_per_class: int = 100,
         val_per_class: int = 20, test_per_class: int = 50) -> Shapes:
    """Balanced train/val/test splits, images flattened to (n, 3 * size * size).

    The test split is drawn from its own fixed stream (the same images for every seed); ``seed`` draws
    the train and validation images.
    """
    def split(per_class: int, generator: torch.Generator) -> Split:
        labels = torch.arange(attributes.n_classes).repeat_interleave(per_class)
        return Split(render(labels, attributes, size, generator).reshape(len(labels), -1), labels)

    gen = torch.Generator().manual_seed(seed)
    test_gen = torch.Generator().manual_seed(2**31 - 1)
    return Shapes(split(train_per_class, gen), split(val_per_class, gen), split(test_per_class, test_gen),
                  (3, size, size), attributes)
