"""Datasets of `<category>.npy` files: uint8 (n, 784), white ink on black."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (n, 784)
    labels: np.ndarray  # int64 (n,)
    categories: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def list_categories(data_dir: Path) -> list[str]:
    """Sorted category names of the `<category>.npy` files in `data_dir`."""
    return sorted(path.stem for path in Path(data_dir).glob("*.npy"))


def load_category(path: Path) -> np.ndarray:
    images = np.load(path, allow_pickle=False)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 784:
        raise ValueError(f"{path}: expected uint8 (n, 784), got {images.dtype} {images.shape}")
    return images


def split_indices(n: int, split: str, val_fraction: float, test_fraction: float, seed: int) -> npt.NDArray[np.int64]:
    """Indices of one split of n rows; the same seed always gives the same split."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = math.ceil(n * test_fraction)
    n_val = math.ceil(n * val_fraction)
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, n)}
    start, stop = bounds[split]
    return np.sort(order[start:stop])


def load_dataset(
    data_dir: Path,
    split: str = "train",
    categories: list[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit_per_class: int | None = None,
) -> Dataset:
    """Load one split of every category; labels index into `categories`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    categories = categories or list_categories(data_dir)
    if not categories:
        raise ValueError(f"no <category>.npy files in {data_dir}")
    images, labels = [], []
    for label, name in enumerate(categories):
        rows = load_category(Path(data_dir) / f"{name}.npy")
        picked = rows[split_indices(len(rows), split, val_fraction, test_fraction, seed)]
        picked = picked[:limit_per_class]
        images.append(picked)
        labels.append(np.full(len(picked), label, dtype=np.int64))
    logger.info("dataset loaded dir=%s split=%s rows=%d", data_dir, split, sum(map(len, labels)))
    return Dataset(np.concatenate(images), np.concatenate(labels), list(categories))


def with_extra_rows(dataset: Dataset, extra_dir: Path) -> Dataset:
    """`dataset` plus every row of `extra_dir/<category>.npy` for its categories (others are ignored)."""
    images, labels = [dataset.images], [dataset.labels]
    for label, name in enumerate(dataset.categories):
        path = Path(extra_dir) / f"{name}.npy"
        if path.exists():
            rows = load_category(path)
            images.append(rows)
            labels.append(np.full(len(rows), label, dtype=np.int64))
    logger.info("extra rows loaded dir=%s rows=%d", extra_dir, sum(map(len, labels[1:])))
    return Dataset(np.concatenate(images), np.concatenate(labels), dataset.categories)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, 784) -> float32 (n, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255).view(-1, 1, 28, 28)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random mirror, small rotation, anisotropic scale, shear and shift of (n, 1, 28, 28).

    A mirrored doodle keeps its label, so half the batch is flipped left-right.
    Served inputs are always normalised (centred, long side 26 px), so shifts and
    scales stay small: they regularise without teaching invariances never needed.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-0.15, 0.15)  # radians, about 9 degrees
    shear = uniform(-0.1, 0.1)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale_x, scale_y = uniform(0.9, 1.1) * mirror, uniform(0.9, 1.1)
    shift_x, shift_y = uniform(-0.05, 0.05), uniform(-0.05, 0.05)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * scale_x, -sin * scale_x + shear, shift_x], dim=1),
            torch.stack([sin * scale_y, cos * scale_y, shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")
