"""Request payloads built from bitmaps."""

import base64
import io

import numpy as np
from PIL import Image


def b64(bitmap: np.ndarray) -> str:
    """Base64 of the raw uint8 bytes: the design's 784-byte payload for a 28x28 bitmap."""
    return base64.b64encode(np.asarray(bitmap, dtype=np.uint8).tobytes()).decode()


def png_b64(array: np.ndarray, mode: str = "L") -> str:
    stream = io.BytesIO()
    Image.fromarray(array, mode=mode).save(stream, format="PNG")
    return base64.b64encode(stream.getvalue()).decode()


def drawing(seed: int = 0) -> np.ndarray:
    """A 28x28 bitmap, white on black, holding one bar placed by `seed`: up to 200 distinct drawings."""
    bitmap = np.zeros((28, 28), np.uint8)
    row, start = 4 + seed % 20, 4 + seed // 20 % 10
    bitmap[row : row + 2, start : start + 12] = 255
    return bitmap
