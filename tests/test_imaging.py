import base64
import io

import numpy as np
import pytest
from PIL import Image

from doodle.imaging import (
    InvalidImageError,
    decode_image,
    encode_bitmap,
    normalize_drawing,
    to_png,
)
from tests.utils.images import png_b64


def square_drawing(size=28, top=2, left=3, side=6) -> np.ndarray:
    ink = np.zeros((size, size), np.uint8)
    ink[top : top + side, left : left + side] = 200
    return ink


def test_decode_image_reads_784_raw_bytes():
    bitmap = np.arange(784, dtype=np.uint32).astype(np.uint8).reshape(28, 28)
    assert np.array_equal(decode_image(encode_bitmap(bitmap)), bitmap)


def test_decode_image_reads_png_and_data_url():
    ink = square_drawing(size=100, side=30)
    payload = png_b64(ink)
    assert np.array_equal(decode_image(payload), ink)
    assert np.array_equal(decode_image("data:image/png;base64," + payload), ink)


def test_decode_image_inverts_dark_ink_on_light_canvas():
    canvas = 255 - square_drawing(size=64, side=20)
    decoded = decode_image(png_b64(canvas))
    assert decoded[0, 0] == 0 and decoded.max() == 200


def test_decode_image_uses_alpha_of_transparent_canvas():
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[10:20, 10:30, 3] = 255  # black strokes on a transparent canvas
    decoded = decode_image(png_b64(rgba, "RGBA"))
    assert decoded[15, 15] == 255 and decoded[0, 0] == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not base64 at all!", "not valid base64"),
        (base64.b64encode(bytes(100)).decode(), "expected 784 raw bytes"),
        (base64.b64encode(b"\x89PNG" + bytes(900)).decode(), "neither 784 raw bytes nor a PNG"),
        ("", "empty"),
    ],
)
def test_decode_image_rejects_bad_payload(payload, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_image(payload)


def test_normalize_drawing_rejects_empty_drawing():
    with pytest.raises(InvalidImageError, match="empty"):
        normalize_drawing(np.zeros((28, 28), np.uint8))


def test_normalize_drawing_crops_scales_centres_and_stretches():
    out = normalize_drawing(square_drawing(size=200, top=5, left=120, side=40))
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (1, 26, 1, 26)
    assert out.max() == 255


def test_normalize_drawing_keeps_aspect_and_centres_short_side():
    ink = np.zeros((100, 100), np.uint8)
    ink[40:50, 0:100] = 255  # a wide bar: 10 tall, 100 wide
    out = normalize_drawing(ink)
    rows = np.flatnonzero(out.any(1))
    assert rows.size in (3, 4)
    assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 0.5


@pytest.mark.integration
def test_normalize_drawing_is_identity_on_quick_draw_bitmaps(quickdraw_test):
    bitmaps = quickdraw_test.images[::50].reshape(-1, 28, 28)
    unchanged = [np.abs(normalize_drawing(b).astype(int) - b).max() <= 1 for b in bitmaps]
    assert np.mean(unchanged) > 0.95


def test_to_png_round_trips():
    bitmap = normalize_drawing(square_drawing())
    decoded = np.asarray(Image.open(io.BytesIO(to_png(bitmap))))
    assert np.array_equal(decoded, bitmap)


def test_normalize_drawing_upscales_small_drawing_to_full_box():
    out = normalize_drawing(square_drawing(size=28, top=20, left=2, side=6))
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert rows[0] <= 2 and rows[-1] >= 25 and cols[0] <= 2 and cols[-1] >= 25
    assert out.max() == 255
