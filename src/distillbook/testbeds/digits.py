"""The ``digits`` test bed: sklearn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

No download: the data ship inside scikit-learn. Pixels are scaled to [0, 1].
The test split is fixed (the same 500 images for every seed and chapter);
seeds vary everything else: the validation split, labelled subsets, inits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
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


def load(seed: int, val_size: int = 200) -> Digits:
    """Fixed stratified test split; a seeded stratified train/val split of the rest."""
    x, y = _arrays()
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=0)
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
