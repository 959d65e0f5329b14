"""The ``captioned`` test bed: procedural captioned images in several styles ("domains"), for CLIP-style chapters.

A scene is a shape in a colour (together, the class) with three nuisance attributes: size (small, large), texture
(plain, striped, dotted) and position (left, right, top, bottom, middle). A caption names each attribute only
sometimes, through templates and synonyms ("a photo of a red square", "a crimson box on the left", "a striped
disc"), so a contrastive encoder has to learn shape and colour separately, not one caption per class.

Domains are style changes of the same scene:

* ``photo`` (the source): a filled, textured shape on a dark, noisy background;
* ``sketch``: the shape's outline on a light background;
* ``medical``: a "scan": desaturated, tinted, blurred, low contrast, with speckle.

Pretraining (:meth:`Captioned.pretraining_batch`) draws mostly photos; each other domain gets a small share
(10 % by default) whose captions usually name the style ("a sketch of a red square", "a scan of a ...").
That share is what zero-shot transfer and prompt learning build on: a pure corruption that no caption names
leaves a tiny encoder without features for it, and prompts nothing to find.

Classes are the shape x colour grid, split into base and novel classes as a checkerboard (class (i, j) is base
when i + j is even), so every shape and every colour appears on both sides, or in halves of the class ids
(CoOp's rule; novel classes then include shapes no base class has). Per-class *descriptions*
(:meth:`Captioned.descriptions`, sentences from the same generator) stand in for an LLM's prompt ensemble.
A share of description *indices* can be made wrong: for such an index i, every class's i-th description
describes another class, or a concept outside the class grid (a mock hallucinating prompt), which is what
BiomedCoOp's by-index pruning can catch.

The tokenizer is word level with ``<pad>`` = 0, ``<eos>`` = 1, ``<bos>`` = 2; every sequence is
``<bos> w_1 ... w_k <eos> <pad> ...``. The end token is deliberately not id 2: transformers' ``CLIPTextModel``
pools at ``argmax(input_ids)`` (the highest id, OpenAI's old convention) when ``eos_token_id == 2``.

Everything random is drawn from a ``torch.Generator``: same seed, same data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F

from distillbook.testbeds.shapes import COLOURS, SHAPES, _mask

SPECIALS = ("<pad>", "<eos>", "<bos>")
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2

SHAPE_WORDS = {"square": ("square", "box"), "circle": ("circle", "disc"), "triangle": ("triangle", "wedge"),
               "diamond": ("diamond", "rhombus"), "cross": ("cross", "saltire"), "ring": ("ring", "donut"),
               "bar": ("bar", "stick"), "plus": ("plus", "plus sign")}
COLOUR_WORDS = {"red": ("red", "crimson"), "green": ("green", "emerald"), "blue": ("blue", "navy"),
                "yellow": ("yellow", "golden"), "magenta": ("magenta", "pink"), "cyan": ("cyan", "turquoise"),
                "orange": ("orange", "amber"), "white": ("white", "pale")}
SIZES = {"small": (0.15, 0.2), "large": (0.24, 0.3)}  # radius range, in image widths
TEXTURES = ("plain", "striped", "dotted")
POSITIONS = {"left": (0.34, 0.5), "right": (0.66, 0.5), "top": (0.5, 0.34), "bottom": (0.5, 0.66),
             "middle": (0.5, 0.5)}
POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                  "middle": "in the middle"}
DOMAIN_WORDS = {"photo": ("photo", "picture", "image"), "sketch": ("sketch", "drawing"),
                "medical": ("scan", "radiograph")}
FILLERS = ("shape", "object")  # the noun when a caption leaves the shape out
# caption templates: {style} "a <word> of", {size}, {colour}, {texture}, {shape}, {position}; empty slots vanish
TEMPLATES = ("{style} a {size} {colour} {texture} {shape} {position}",
             "{style} a {size} {texture} {shape} in {colour} {position}",
             "{style} a {colour} {shape} {position} that is {size}")
DESCRIPTION_TEMPLATES = ("a {colour} {shape}", "a {shape} in {colour}", "a {colour} coloured {shape}",
                         "a {shape} that is {colour}", "{style} a {colour} {shape}", "{style} a {shape} in {colour}",
                         "a {size} {colour} {shape}", "a {colour} {texture} {shape}")


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary: ids ``<bos> w_1 ... w_k <eos> <pad> ...``."""

    pad_id, eos_id, bos_id = PAD_ID, EOS_ID, BOS_ID

    def __init__(self, words):
        self.vocab = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        """The word ids of ``text`` (no special tokens)."""
        unknown = [w for w in text.split() if w not in self.index]
        if unknown:
            raise ValueError(f"text {text!r} has words outside the vocabulary: {unknown}")
        return [self.index[w] for w in text.split()]

    def encode(self, texts: list[str], length: int) -> torch.Tensor:
        """(n, length) ids; each row is bos, the words, eos, then padding."""
        rows = [[BOS_ID, *self.ids(t), EOS_ID] for t in texts]
        too_long = [t for t, r in zip(texts, rows) if len(r) > length]
        if too_long:
            raise ValueError(f"length={length} is too short for {too_long[0]!r} ({len(self.ids(too_long[0])) + 2} ids)")
        out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out

    def decode(self, ids: torch.Tensor) -> str:
        return " ".join(self.vocab[i] for i in ids.tolist() if i not in (PAD_ID, BOS_ID, EOS_ID))


@dataclass(frozen=True)
class Scenes:
    """Attribute indices of n scenes (into the bed's shapes and colours, and the module's nuisance tables)."""
    shape: torch.Tensor
    colour: torch.Tensor
    size: torch.Tensor
    texture: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class Captioned:
    """The test bed: class grid, domains, tokenizer, and the data generators.

    ``extra_shapes`` and ``extra_colours`` are concepts outside the class grid that pretraining images and captions
    show (an ``extra_share`` of pretraining scenes sits in a cell of the extended shape x colour grid outside the
    class grid), so the encoder knows words that no class has.
    ``style_share`` is each non-photo domain's share of pretraining images; ``style_named`` the chance that a
    caption of each domain names its style ("a sketch of ..."); ``attribute_named`` the chance that a caption
    names the colour, the shape (one of the two always is) and each nuisance attribute.
    """
    shapes: tuple[str, ...] = ("square", "circle", "triangle", "cross", "ring")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    size: int = 32
    max_length: int = 16
    style_share: float = 0.1
    split: str = "checkerboard"
    extra_shapes: tuple[str, ...] = ()
    extra_colours: tuple[str, ...] = ()
    extra_share: float = 0.1
    style_named: dict = field(default_factory=lambda: {"photo": 0.3, "sketch": 0.8, "medical": 0.8})
    attribute_named: dict = field(default_factory=lambda: {"colour": 0.6, "shape": 0.8, "size": 0.25,
                                                           "texture": 0.25, "position": 0.25})

    def __post_init__(self):
        for name, given, allowed in (("shapes", self.shapes, SHAPES), ("colours", self.colours, COLOURS)):
            unknown = [g for g in given if g not in allowed]
            if not given or unknown or len(set(given)) != len(given):
                raise ValueError(f"{name}={list(given)}: give distinct values from {', '.join(allowed)}")
        for name, given, grid in (("extra_shapes", self.extra_shapes, self.shapes),
                                  ("extra_colours", self.extra_colours, self.colours)):
            allowed = [x for x in (SHAPES if name == "extra_shapes" else COLOURS) if x not in grid]
            if any(g not in allowed for g in given) or len(set(given)) != len(given):
                raise ValueError(f"{name}={list(given)}: give distinct values outside the class grid, from "
                                 f"{', '.join(allowed)}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {self.size}")
        if self.split not in ("checkerboard", "halves"):
            raise ValueError(f"split must be 'checkerboard' or 'halves', got {self.split!r}")
        if not 0 <= self.extra_share <= 0.5:
            raise ValueError(f"extra_share must be in [0, 0.5], got {self.extra_share}")
        if not 0 <= self.style_share <= 0.5:
            raise ValueError(f"style_share must be in [0, 0.5], got {self.style_share}")

    # ------------------------------------------------------------ classes and text
    @property
    def classes(self) -> list[tuple[str, str]]:
        """(shape, colour) of every class, in class-id order (shape-major)."""
        return list(itertools.product(self.shapes, self.colours))

    @property
    def all_shapes(self) -> tuple[str, ...]:
        """The class grid's shapes, then the pretraining-only ones (scene indices point into this)."""
        return self.shapes + self.extra_shapes

    @property
    def all_colours(self) -> tuple[str, ...]:
        return self.colours + self.extra_colours

    @property
    def classnames(self) -> list[str]:
        return [f"{COLOUR_WORDS[c][0]} {SHAPE_WORDS[s][0]}" for s, c in self.classes]

    @property
    def base_classes(self) -> list[int]:
        """``checkerboard``: class (i, j) with i + j even; ``halves``: the first half of the ids (CoOp's rule)."""
        n = len(self.classes)
        if self.split == "halves":
            return list(range((n + 1) // 2))
        return [k for k in range(n) if sum(divmod(k, len(self.colours))) % 2 == 0]

    @property
    def novel_classes(self) -> list[int]:
        return [k for k in range(len(self.classes)) if k not in set(self.base_classes)]

    @cached_property
    def tokenizer(self) -> WordTokenizer:
        words = {"a", "of", "in", "that", "is", "coloured", "on", "the", "at", *FILLERS, *TEXTURES, *SIZES}
        for table in (SHAPE_WORDS, COLOUR_WORDS, DOMAIN_WORDS):
            words |= {w for synonyms in table.values() for phrase in synonyms for w in phrase.split()}
        words |= {w for phrase in POSITION_WORDS.values() for w in phrase.split()}
        return WordTokenizer(words)

    # ------------------------------------------------------------ scenes and images
    def scenes(self, n: int, generator: torch.Generator, classes: torch.Tensor | None = None) -> Scenes:
        """n random scenes (an ``extra_share`` of them outside the class grid when there are extra concepts);
        ``classes`` (n,) fixes shape and colour to a class's."""
        extended = classes is None and (self.extra_shapes or self.extra_colours)
        if classes is None:
            classes = torch.randint(len(self.classes), (n,), generator=generator)
        shape, colour = classes // len(self.colours), classes % len(self.colours)
        if extended:  # an extra_share of the scenes: a cell of the extended grid outside the class grid
            width = len(self.all_colours)
            outside = torch.tensor([k for k in range(len(self.all_shapes) * width)
                                    if k // width >= len(self.shapes) or k % width >= len(self.colours)])
            cell = outside[torch.randint(len(outside), (n,), generator=generator)]
            swap = torch.rand(n, generator=generator) < self.extra_share
            shape, colour = torch.where(swap, cell // width, shape), torch.where(swap, cell % width, colour)
        return Scenes(shape, colour,
                      torch.randint(len(SIZES), (n,), generator=generator),
                      torch.randint(len(TEXTURES), (n,), generator=generator),
                      torch.randint(len(POSITIONS), (n,), generator=generator))

    def render(self, scenes: Scenes, domain: str | list[str], generator: torch.Generator) -> torch.Tensor:
        """Images (n, 3, size, size) in [0, 1]; ``domain`` is one name or one per scene."""
        n, s = len(scenes), self.size
        domains = [domain] * n if isinstance(domain, str) else list(domain)
        unknown = sorted(set(domains) - set(DOMAIN_WORDS))
        if unknown or len(domains) != n:
            raise ValueError(f"domain must be one of {', '.join(DOMAIN_WORDS)} (or one per scene), "
                             f"got {unknown or len(domains)}")
        coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        gy, gx = torch.meshgrid(coords, coords, indexing="ij")
        low, high = torch.tensor(list(SIZES.values())).T
        u = torch.rand(n, generator=generator)
        radius = (low[scenes.size] + u * (high[scenes.size] - low[scenes.size]))[:, None, None]
        jitter = 0.04 * (2 * torch.rand(n, 2, generator=generator) - 1)
        centre = torch.tensor(list(POSITIONS.values()))[scenes.position] + jitter
        dx, dy = gx - centre[:, 0, None, None], gy - centre[:, 1, None, None]
        mask = torch.zeros(n, s, s, dtype=torch.bool)
        for i, shape in enumerate(self.all_shapes):
            rows = scenes.shape == i
            if rows.any():
                mask[rows] = _mask(shape, dx[rows], dy[rows], radius[rows])
        rgb = torch.tensor([COLOURS[c] for c in self.all_colours])[scenes.colour]  # (n, 3)
        rgb = rgb * (0.75 + 0.25 * torch.rand(n, 1, generator=generator))
        pixel = torch.arange(s)
        stripes = ((pixel[:, None] // max(1, s // 16)) % 2).float().expand(s, s)
        dots = (((pixel[:, None] // max(1, s // 16)) % 2) * ((pixel[None, :] // max(1, s // 16)) % 2)).float()
        texture = torch.stack([torch.ones(s, s), 1 - 0.55 * stripes, 1 - 0.55 * dots])[scenes.texture]  # (n, s, s)
        background = 0.25 * torch.rand(n, 1, 1, 1, generator=generator)
        noise = torch.randn(n, 3, s, s, generator=generator)
        photo = torch.where(mask[:, None], rgb[:, :, None, None] * texture[:, None], background) + 0.04 * noise
        images = photo.clamp(0, 1)
        is_sketch = torch.tensor([d == "sketch" for d in domains])
        if is_sketch.any():  # the outline (mask pixels next to the outside), dark-ish colour on paper
            k = 2 * max(1, s // 24) + 1
            outside = F.max_pool2d((~mask[is_sketch])[:, None].float(), k, stride=1, padding=k // 2)[:, 0] > 0
            outline = mask[is_sketch] & outside
            paper = 0.85 + 0.15 * torch.rand(int(is_sketch.sum()), 1, 1, 1, generator=generator)
            ink = 0.85 * rgb[is_sketch][:, :, None, None]
            images[is_sketch] = (torch.where(outline[:, None], ink, paper) + 0.03 * noise[is_sketch]).clamp(0, 1)
        is_scan = torch.tensor([d == "medical" for d in domains])
        if is_scan.any():  # desaturate, tint, blur, lower the contrast, speckle
            x = photo[is_scan].clamp(0, 1)
            grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
            x = (0.45 * x + 0.55 * grey) * torch.tensor([0.8, 0.95, 1.0])[:, None, None]
            x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            speckle = 1 + 0.12 * torch.randn(x.shape, generator=generator)
            images[is_scan] = ((0.15 + 0.75 * x) * speckle).clamp(0, 1)
        return images

    # ------------------------------------------------------------ captions
    def caption(self, scene: list[int], domain: str, u: list[float]) -> str:
        """One caption of the scene (shape, colour, size, texture, position), choices made by 10 uniforms ``u``."""
        shape, colour, size, texture, position = scene
        named = self.attribute_named
        say_colour, say_shape = u[0] < named["colour"], u[1] < named["shape"]
        say_shape = say_shape or not say_colour  # always name one of the two
        style_said = u[5] < self.style_named[domain]
        words = DOMAIN_WORDS[domain]
        slots = {
            "style": f"a {words[int(u[6] * len(words))]} of" if style_said else "",
            "colour": COLOUR_WORDS[self.all_colours[colour]][int(u[8] * 2)] if say_colour else "",
            "shape": SHAPE_WORDS[self.all_shapes[shape]][int(u[9] * 2)] if say_shape else FILLERS[int(u[9] * 2)],
            "size": list(SIZES)[size] if u[2] < named["size"] else "",
            "texture": TEXTURES[texture] if u[3] < named["texture"] else "",
            "position": POSITION_WORDS[list(POSITIONS)[position]] if u[4] < named["position"] else "",
        }
        template = TEMPLATES[int(u[7] * len(TEMPLATES))]
        if (not slots["colour"] and "in {colour}" in template) or (not slots["size"] and "is {size}" in template):
            template = TEMPLATES[0]  # no dangling "in" / "that is"
        return " ".join(template.format(**slots).split())

    def pretraining_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (n, 3, size, size), caption ids (n, max_length)): a ``style_share`` of each non-photo domain."""
        scenes = self.scenes(n, generator)
        r = torch.rand(n, generator=generator)
        others = [d for d in DOMAIN_WORDS if d != "photo"]
        domains = ["photo" if x >= self.style_share * len(others) else others[int(x / self.style_share)]
                   for x in r.tolist()]
        images = self.render(scenes, domains, generator)
        u = torch.rand(n, 10, generator=generator).tolist()
        attrs = torch.stack([scenes.shape, scenes.colour, scenes.size, scenes.texture, scenes.position], 1).tolist()
        captions = [self.caption(a, d, ui) for a, d, ui in zip(attrs, domains, u)]
        return images, self.tokenizer.encode(captions, self.max_length)

    def labelled(self, domain: str, classes: list[int], per_class: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) with ``per_class`` images of each class in ``classes``; label j means ``classes[j]``."""
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        bad = [c for c in classes if not 0 <= c < len(self.classes)]
        if not classes or bad:
            raise ValueError(f"classes must be class ids in [0, {len(self.classes)}), got {bad or classes}")
        labels = torch.arange(len(classes)).repeat_interleave(per_class)
        scenes = self.scenes(len(labels), generator, classes=torch.tensor(classes)[labels])
        return self.render(scenes, domain, generator), labels

    def descriptions(self, n_per_class: int, generator: torch.Generator, wrong_share: float = 0.0,
                     domain: str = "photo", wrong_kind: str = "confuser") -> tuple[list[list[str]], torch.Tensor]:
        """``n_per_class`` descriptions of every class (a mock LLM prompt ensemble) and the wrong-index mask.

        Description i of class c is a sentence about c's shape and colour (sometimes with a nuisance attribute
        or the domain's style word). For a ``wrong_share`` of the indices i, every class's i-th description
        is wrong, in one of two ways (``wrong_kind``):

        * ``confuser``: it describes the class's *confuser* (one other class per class, drawn once: a random
          derangement), a systematic hallucination that biases the ensemble mean;
        * ``unseen``: it describes a concept outside the class grid, a shape and a colour no class has (drawn
          per class and index from ``extra_shapes`` and ``extra_colours``, concepts pretraining showed, or, without
          extras, from the vocabulary's other shapes and colours, words pretraining never used), as an LLM's
          hallucination names things that are not in the picture.

        Returns (texts[c][i], wrong (n_per_class,)).
        """
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
        if not 0 <= wrong_share < 1:
            raise ValueError(f"wrong_share must be in [0, 1), got {wrong_share}")
        if domain not in DOMAIN_WORDS:
            raise ValueError(f"domain must be one of {', '.join(DOMAIN_WORDS)}, got {domain!r}")
        unseen_shapes = list(self.extra_shapes) or [s for s in SHAPE_WORDS if s not in self.shapes]
        unseen_colours = list(self.extra_colours) or [c for c in COLOUR_WORDS if c not in self.colours]
        if wrong_kind not in ("confuser", "unseen"):
            raise ValueError(f"wrong_kind must be 'confuser' or 'unseen', got {wrong_kind!r}")
        if wrong_kind == "unseen" and not (unseen_shapes and unseen_colours):
            raise ValueError("wrong_kind='unseen' needs a shape and a colour that no class has; this bed uses "
                             f"shapes {list(self.shapes)} and colours {list(self.colours)}")
        n_classes = len(self.classes)
        wrong = torch.zeros(n_per_class, dtype=torch.bool)
        wrong[torch.randperm(n_per_class, generator=generator)[:round(wrong_share * n_per_class)]] = True
        confuser = torch.randperm(n_classes, generator=generator)
        while (confuser == torch.arange(n_classes)).any():  # a derangement: nobody is their own confuser
            confuser = torch.randperm(n_classes, generator=generator)
        u = torch.rand(n_per_class, n_classes, 5, generator=generator).tolist()
        # unseen concepts: which other shape and colour each (index, class) names (drawn after the rest, so the
        # confuser kind's descriptions do not depend on this)
        other = torch.rand(n_per_class, n_classes, 2, generator=generator).tolist() if wrong_kind == "unseen" else None
        texts = [[""] * n_per_class for _ in range(n_classes)]
        for i in range(n_per_class):
            for c in range(n_classes):
                shape, colour = divmod(int(confuser[c]) if wrong[i] else c, len(self.colours))
                shape_name, colour_name = self.shapes[shape], self.colours[colour]
                if wrong[i] and other is not None:
                    a, b = other[i][c]
                    shape_name = unseen_shapes[int(a * len(unseen_shapes))]
                    colour_name = unseen_colours[int(b * len(unseen_colours))]
                v = u[i][c]
                words = DOMAIN_WORDS[domain]
                template = DESCRIPTION_TEMPLATES[int(v[0] * len(DESCRIPTION_TEMPLATES))]
                texts[c][i] = template.format(
                    style=f"a {words[int(v[1] * len(words))]} of", size=list(SIZES)[int(v[4] * 2)],
                    colour=COLOUR_WORDS[colour_name][int(v[2] * 2)],
                    shape=SHAPE_WORDS[shape_name][int(v[3] * 2)], texture=TEXTURES[int(v[4] * 3)])
        return texts, wrong
