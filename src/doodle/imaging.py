"""Decode drawings and normalise them the way Quick, Draw! bitmaps were made.

Quick Draw's 28x28 bitmaps hold the drawing cropped to its ink, scaled so the
longer side spans 26 px, centred with a 1 px empty border, brightest ink 255.
`normalize_drawing` produces exactly that form from any grayscale drawing. Ink
boxes of 26 px or more (every canvas drawing) are area-averaged in integer
arithmetic, so the browser reproduces them byte for byte; smaller ones are
upscaled bicubically, which keeps strokes smooth (87% vs 68% top-1 measured on
drawings shrunk to 14-18 px).
"""

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image

SIDE = 28
PIXELS = SIDE * SIDE
INK_SIDE = 26  # longer side of the ink box in a Quick Draw bitmap
MAX_ENCODED_CHARS = 4_000_000  # about 3 MB of decoded image
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE

_DATA_URL = re.compile(r"^data:image/[a-z.+-]+;base64,", re.IGNORECASE)


class InvalidImageError(ValueError):
    """The payload cannot be turned into a drawing; the message says why."""


def decode_base64(payload: str) -> bytes:
    """Decode base64 (optionally a data URL) strictly."""
    if len(payload) > MAX_ENCODED_CHARS:
        raise InvalidImageError(f"image is too large: over {MAX_ENCODED_CHARS} base64 characters")
    text = _DATA_URL.sub("", payload.strip(), count=1)
    text = "".join(text.split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("image is not valid base64") from None


def decode_png(data: bytes) -> np.ndarray:
    """Return the ink of an encoded image as uint8 (H, W), ink high, background 0.

    Images with transparency use alpha as ink. Opaque images use luminance and
    are inverted when their border is light (dark strokes on a light canvas).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS or max(image.size) > MAX_IMAGE_SIDE:
                raise InvalidImageError(f"image is too large: {image.width}x{image.height} pixels")
            image.load()
            rgba = np.asarray(image.convert("RGBA"))
    except InvalidImageError:
        raise
    except Image.DecompressionBombError:
        raise InvalidImageError(f"image is too large: over {MAX_IMAGE_PIXELS} pixels") from None
    except Exception:  # Pillow fails on broken files with OSError, SyntaxError, ValueError and more
        raise InvalidImageError("image is neither 784 raw bytes nor a PNG/JPEG image") from None
    alpha = rgba[..., 3]
    if alpha.min() < 255:
        return alpha.copy()
    gray = np.asarray(Image.fromarray(rgba[..., :3]).convert("L"))
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 255 - gray if np.median(border) > 127 else gray.copy()


def decode_image(payload: str) -> np.ndarray:
    """Decode the design's base64 payload into uint8 (H, W), ink high.

    784 raw bytes are a 28x28 bitmap, white strokes on black. Anything else must
    be an encoded image (PNG or JPEG, any size), optionally as a data URL.
    """
    data = decode_base64(payload)
    if not data:
        raise InvalidImageError("image is empty")
    if data.startswith((b"\x89PNG", b"\xff\xd8")):
        try:
            return decode_png(data)
        except InvalidImageError:
            if len(data) != PIXELS:
                raise
    if len(data) == PIXELS:  # also 784 raw bytes that only look like the start of a PNG/JPEG
        return np.frombuffer(data, dtype=np.uint8).reshape(SIDE, SIDE).copy()
    raise InvalidImageError(f"image has {len(data)} bytes: expected {PIXELS} raw bytes (28x28) or a PNG/JPEG")


def _area_weights(length: int) -> np.ndarray:
    """Integer weights (INK_SIDE, length) that area-resample `length` pixels to INK_SIDE.

    In coordinates scaled by INK_SIDE * length, source pixel j covers
    [INK_SIDE*j, INK_SIDE*(j+1)) and target pixel i covers [length*i, length*(i+1)),
    so every overlap is an integer and each row sums to `length`.
    """
    src = np.arange(length, dtype=np.int64)
    dst = np.arange(INK_SIDE, dtype=np.int64)[:, None]
    lo = np.maximum(INK_SIDE * src, length * dst)
    hi = np.minimum(INK_SIDE * (src + 1), length * (dst + 1))
    weights: np.ndarray = np.clip(hi - lo, 0, None)
    return weights


def _round_div(numerator: np.ndarray, denominator: int | np.ndarray) -> np.ndarray:
    """Integer division rounding half up, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def normalize_drawing(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale the longer side to 26 px, centre in 28x28, stretch to 255.

    Takes uint8 (H, W) with ink high and returns uint8 (28, 28) in Quick Draw's form.
    """
    if ink.ndim != 2:
        raise InvalidImageError(f"image must be 2-D grayscale, got shape {ink.shape}")
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise InvalidImageError("drawing is empty: no ink found")
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.int64)
    height, width = crop.shape
    length = max(height, width)
    top, left = (length - height) // 2, (length - width) // 2

    if length >= INK_SIDE:
        # weights @ square @ weights.T without the (length, length) square, which a long thin drawing makes huge.
        # Float64 matmul is exact here (integer sums under 2**53) and far faster than int64.
        weights = _area_weights(length).astype(np.float64)
        summed = weights[:, top : top + height] @ crop @ weights[:, left : left + width].T
        scaled = _round_div(np.rint(summed).astype(np.int64), length * length)
    else:
        square = np.zeros((length, length), dtype=np.int64)
        square[top : top + height, left : left + width] = crop
        upscaled = Image.fromarray(square.astype(np.uint8)).resize((INK_SIDE, INK_SIDE), Image.Resampling.BICUBIC)
        scaled = np.asarray(upscaled).astype(np.int64)
    peak = int(scaled.max())
    if peak == 0:
        raise InvalidImageError("drawing is empty: ink too faint")
    stretched = _round_div(scaled * 255, peak)

    out = np.zeros((SIDE, SIDE), dtype=np.uint8)
    out[1 : 1 + INK_SIDE, 1 : 1 + INK_SIDE] = stretched
    return out


def to_png(bitmap: np.ndarray) -> bytes:
    """Encode uint8 (H, W) grayscale as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(bitmap.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_bitmap(bitmap: np.ndarray) -> str:
    """Base64 of the 784 raw bytes of a 28x28 bitmap: the design's wire format."""
    return base64.b64encode(np.ascontiguousarray(bitmap, dtype=np.uint8).tobytes()).decode()
