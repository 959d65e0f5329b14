"""The ``digits`` test bed: sklearn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

No download: the data ship inside scikit-learn. Pixels are scaled to [0, 1].
By default the test split is fixed (the same 500 images for every seed and
chapter) and seeds vary everything else: the validation split, labelled
subsets, inits. ``load(seed, test_seed=seed)`` redraws the test split too
(repeated random splits), so that seed-to-seed spread includes which 500
images a toy of 1,797 happens to be tested on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

N_CLASSES = 10
IMAGE_SHAPE = (8, 8)
TEST_SIZE = 500


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (n, 64) float32 in [0, 1]
    y: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.x[index], self.y[index])

    def without_class(self, label: int) -> "Split":
        return self.subset(torch.nonzero(self.y != label).flatten())


@dataclass(frozen=True)
class Digits:
    train: Split
    val: Split
    test: Split


def _arrays():
    bunch = load_digits()
    return bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def load(seed: int, val_size: int = 200, test_seed: int = 0) -> Digits:
    """A stratified test split drawn with ``test_seed`` (0: the book's fixed one); a seeded stratified
    train/val split of the rest."""
    x, y = _arrays()
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=test_seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=val_size, stratify=y_rest,
                                                      random_state=seed)
    return Digits(_as_split(x_train, y_train), _as_split(x_val, y_val), _as_split(x_test, y_test))


def _as_split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def labelled_subset(split: Split, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` examples of each class present, drawn with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for label in torch.unique(split.y).tolist():
        idx = torch.nonzero(split.y == label).flatten()
        if len(idx) < per_class:
            raise ValueError(f"per_class={per_class} but class {label} has only {len(idx)} examples")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.sort(torch.cat(picks)).values


def jitter(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each flattened image by its own random (dy, dx) in [-max_shift, max_shift], filling with zeros
    (the "jittered inputs" Hinton et al. trained their MNIST teacher on; no wrap-around)."""
    if max_shift == 0:
        return x
    n, (h, w), k = len(x), IMAGE_SHAPE, 2 * max_shift + 1
    padded = F.pad(x.reshape(n, h, w), (max_shift,) * 4)
    choice = torch.randint(0, k * k, (n,), generator=generator, device=generator.device).to(x.device)
    out = torch.zeros(n, h, w, dtype=x.dtype, device=x.device)
    for c in range(k * k):
        dy, dx = divmod(c, k)
        out += (choice == c).to(x.dtype)[:, None, None] * padded[:, dy:dy + h, dx:dx + w]
    return out.reshape(n, h * w)
