"""Labelled drawings with distinct content, so every row can be traced to one drawing."""

from pathlib import Path

import numpy as np

from doodle.drawings import save_drawing
from doodle.imaging import normalize_drawing, to_png
from doodle.pipeline.ledger import KINDS, load_ledger, read_rows


def synthetic_images(count: int, seed: int = 0) -> np.ndarray:
    """`count` distinct random bitmaps, uint8 (count, 784) like Quick Draw rows, for tests that need no real data."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 784), dtype=np.uint8)


def save_drawings(img_root: Path, images: np.ndarray, category: str) -> list[np.ndarray]:
    """Save Quick Draw rows as PNGs; returns the rows as the pipeline will store them."""
    rows = []
    for image in images:
        bitmap = normalize_drawing(image.reshape(28, 28))
        save_drawing(img_root, category, to_png(bitmap))
        rows.append(bitmap.reshape(784))
    return rows


def stored_rows(data_dir: Path) -> list[bytes]:
    """Every committed row in old/ and new/, as bytes."""
    ledger = load_ledger(data_dir)
    rows = []
    for kind in KINDS:
        for category, count in ledger.counts(kind).items():
            rows += [row.tobytes() for row in read_rows(data_dir, kind, category, count)]
    return rows
