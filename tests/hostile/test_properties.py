"""Property-based tests: the image decoder, the category-name rule and the model's input parser never crash."""

import io
import re

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from doodle.categories import MAX_CATEGORY_CHARS, InvalidCategoryError, normalize_category
from doodle.imaging import (
    MAX_IMAGE_SIDE,
    PIXELS,
    SIDE,
    InvalidImageError,
    decode_base64,
    decode_image,
    encode_bitmap,
    normalize_drawing,
)
from doodle.model.pyfunc import to_bitmaps
from tests.utils.craft import PNG_SIGNATURE, b64, encoded, png_chunk, png_claiming, png_with_chunk_length

PROPERTY = settings(derandomize=True, deadline=None, database=None, max_examples=300)
IMAGES = settings(PROPERTY, max_examples=150)

CATEGORY_SHAPE = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")
NAME_CHARS = "ABCXYZabcxyz0189 _-"


def assert_is_ink(decoded) -> None:
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.uint8 and decoded.ndim == 2 and decoded.size > 0


def decodes_or_refuses(payload: str) -> None:
    """The decoder's whole contract with hostile input: an ink array, or InvalidImageError."""
    try:
        decoded = decode_image(payload)
    except InvalidImageError as error:
        assert str(error)
        return
    assert_is_ink(decoded)


small_grays = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24))
grays = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=60))


@st.composite
def encoded_images(draw) -> bytes:
    """A real PNG or JPEG of any mode, as bytes."""
    array = draw(small_grays)
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1", "I;16"]))
    image_format = draw(st.sampled_from(["PNG", "JPEG"])) if mode in ("L", "RGB") else "PNG"
    image = Image.fromarray(array).convert(mode) if mode != "I;16" else Image.fromarray(array.astype(np.uint16) * 257)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@st.composite
def damaged(draw, images) -> bytes:
    """A real image, truncated and with some bytes overwritten."""
    data = bytearray(draw(images))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


# --- decode_base64 / decode_image -------------------------------------------------------------------------------


@PROPERTY
@given(st.text())
def test_decode_base64_returns_bytes_or_invalid_image_error_for_any_text(text):
    try:
        assert isinstance(decode_base64(text), bytes)
    except InvalidImageError as error:
        assert "base64" in str(error)


@PROPERTY
@given(st.binary(max_size=2000))
def test_decode_base64_round_trips_any_bytes_also_as_data_url(data):
    assert decode_base64(b64(data)) == data
    assert decode_base64("data:image/png;base64," + b64(data)) == data


@PROPERTY
@given(st.text())
def test_decode_image_never_crashes_on_any_text(text):
    decodes_or_refuses(text)


@PROPERTY
@given(st.sampled_from([b"", PNG_SIGNATURE, b"\x89PNG", b"\xff\xd8", b"\xff\xd8\xff\xe0"]), st.binary(max_size=3000))
def test_decode_image_never_crashes_on_any_bytes_behind_an_image_signature(prefix, rest):
    decodes_or_refuses(b64(prefix + rest))


@IMAGES
@given(damaged(encoded_images()))
@example(png_with_chunk_length(b"IHDR", 5))  # Pillow: ValueError, truncated IHDR chunk
@example(png_with_chunk_length(b"IDAT", 7))  # Pillow: SyntaxError, broken PNG file
def test_decode_image_never_crashes_on_damaged_png_or_jpeg(data):
    decodes_or_refuses(b64(data))


@IMAGES
@given(encoded_images())
def test_decode_image_reads_every_png_and_jpeg_mode(data):
    assert_is_ink(decode_image(b64(data)))


@PROPERTY
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_decode_image_refuses_png_claiming_a_huge_size_before_reading_pixels(width, height):
    """A decompression bomb's header: 64 bytes of pixel data claiming up to 2**31 x 2**31 pixels."""
    payload = b64(png_claiming(width, height))
    if max(width, height) > MAX_IMAGE_SIDE:
        with pytest.raises(InvalidImageError, match="too large"):
            decode_image(payload)
    else:
        decodes_or_refuses(payload)


@PROPERTY
@given(hnp.arrays(np.uint8, (SIDE, SIDE)))
def test_decode_image_reads_any_784_raw_bytes_as_the_bitmap(bitmap):
    assert np.array_equal(decode_image(encode_bitmap(bitmap)), bitmap)


@PROPERTY
@given(hnp.arrays(np.uint8, PIXELS), st.sampled_from([PNG_SIGNATURE, b"\x89PNG", b"\xff\xd8", b"\xff\xd8\xff\xe0"]))
def test_decode_image_reads_784_raw_bytes_that_start_like_an_image_as_the_bitmap(pixels, signature):
    pixels[: len(signature)] = np.frombuffer(signature, np.uint8)
    assert np.array_equal(decode_image(encode_bitmap(pixels)), pixels.reshape(SIDE, SIDE))


@IMAGES
@given(small_grays)
def test_decode_image_reads_gray_png_as_ink_inverting_a_light_canvas(array):
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    expected = 255 - array if np.median(border) > 127 else array
    assert np.array_equal(decode_image(b64(encoded(array))), expected)


@IMAGES
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=16)))
def test_decode_image_reads_png_of_exactly_784_bytes_as_png(array):
    """A PNG that happens to be 784 bytes long is still a PNG, not a raw 28x28 bitmap."""
    png = encoded(array)
    padding = PIXELS - len(png) - 12
    assume(padding >= 4)  # room for the chunk's keyword and separator
    padded = png[:33] + png_chunk(b"tEXt", b"pad\x00" + b"x" * (padding - 4)) + png[33:]
    assert len(padded) == PIXELS
    decoded = decode_image(b64(padded))
    assert decoded.shape == array.shape


# --- normalize_drawing ------------------------------------------------------------------------------------------


@PROPERTY
@given(grays)
def test_normalize_drawing_gives_quick_draw_form_or_says_empty(ink):
    """Faint ink that averages away when scaled down counts as empty too."""
    try:
        out = normalize_drawing(ink)
    except InvalidImageError as error:
        assert "empty" in str(error)
        return
    assert ink.any()
    assert out.dtype == np.uint8 and out.shape == (SIDE, SIDE)
    assert out.max() == 255
    assert not out[0].any() and not out[-1].any() and not out[:, 0].any() and not out[:, -1].any()


def area_average_reference(ink: np.ndarray) -> np.ndarray | None:
    """The documented rule computed the plain way: the ink box centred in a square, area-averaged to 26 px in
    integer arithmetic, stretched to 255. None when the ink averages away. For ink boxes of 26 px or more."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.int64)
    length = max(crop.shape)
    square = np.zeros((length, length), np.int64)
    top, left = (length - crop.shape[0]) // 2, (length - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    targets = np.arange(27) * length  # target pixel i spans [length*i, length*(i+1)) in units of 1/26 px
    sources = np.arange(length + 1) * 26
    weights = np.clip(
        np.minimum(targets[1:, None], sources[None, 1:]) - np.maximum(targets[:-1, None], sources[None, :-1]), 0, None
    )
    scaled = (2 * (weights @ square @ weights.T) + length**2) // (2 * length**2)
    if scaled.max() == 0:
        return None
    out = np.zeros((SIDE, SIDE), np.int64)
    out[1:27, 1:27] = (2 * scaled * 255 + scaled.max()) // (2 * scaled.max())
    return out


long_inks = st.tuples(st.integers(1, 150), st.integers(26, 150), st.booleans()).flatmap(
    lambda spec: hnp.arrays(np.uint8, (spec[0], spec[1]) if spec[2] else (spec[1], spec[0]))
)


@PROPERTY
@given(long_inks)
def test_normalize_drawing_matches_the_integer_area_average_byte_for_byte(ink):
    """The form the browser reproduces, for wide, tall and long thin drawings alike."""
    assume(ink.any())
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assume(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 26)
    expected = area_average_reference(ink)
    if expected is None:
        with pytest.raises(InvalidImageError, match="too faint"):
            normalize_drawing(ink)
    else:
        assert np.array_equal(normalize_drawing(ink), expected)


def normalized_or_error(ink: np.ndarray) -> np.ndarray | str:
    try:
        return normalize_drawing(ink)
    except InvalidImageError as error:
        return str(error)


@PROPERTY
@given(grays, st.tuples(*[st.integers(0, 40)] * 4))
def test_normalize_drawing_ignores_where_on_the_canvas_the_drawing_is(ink, pads):
    top, bottom, left, right = pads
    moved = np.pad(ink, ((top, bottom), (left, right)))
    np.testing.assert_equal(normalized_or_error(moved), normalized_or_error(ink))


@PROPERTY
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_normalize_drawing_refuses_anything_but_a_2d_drawing(ink):
    assume(ink.ndim != 2 or not ink.any())
    with pytest.raises(InvalidImageError):
        normalize_drawing(ink)


@PROPERTY
@given(st.text())
def test_decoded_and_normalised_text_is_a_bitmap_or_invalid_image_error(text):
    try:
        out = normalize_drawing(decode_image(text))
    except InvalidImageError:
        return
    assert out.dtype == np.uint8 and out.shape == (SIDE, SIDE) and out.max() == 255


# --- normalize_category -----------------------------------------------------------------------------------------


@PROPERTY
@given(st.one_of(st.text(), st.text(alphabet=NAME_CHARS + "./\\\x00\n\u200b\u202e\uff41\u0430")))
def test_normalize_category_gives_safe_name_or_invalid_category_error(name):
    try:
        normalized = normalize_category(name)
    except InvalidCategoryError as error:
        assert "category" in str(error)
        return
    assert CATEGORY_SHAPE.fullmatch(normalized)
    assert len(normalized) <= MAX_CATEGORY_CHARS
    assert normalized.isascii()
    assert not any(bad in normalized for bad in ("/", "\\", "..", "\x00"))


@PROPERTY
@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=MAX_CATEGORY_CHARS))
def test_normalize_category_accepts_exactly_the_names_with_a_letter_or_digit(name):
    if any(c.isalnum() for c in name):
        assert CATEGORY_SHAPE.fullmatch(normalize_category(name))
    else:
        with pytest.raises(InvalidCategoryError):
            normalize_category(name)


@PROPERTY
@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=MAX_CATEGORY_CHARS))
def test_normalize_category_is_idempotent_and_blind_to_case_and_separators(name):
    assume(any(c.isalnum() for c in name))
    normalized = normalize_category(name)
    assert normalize_category(normalized) == normalized
    assert normalize_category(name.upper()) == normalized
    assert normalize_category(name.replace(" ", "-").replace("_", " ")) == normalized


@PROPERTY
@given(st.text(min_size=1), st.text(alphabet=NAME_CHARS), st.text(alphabet=NAME_CHARS))
def test_normalize_category_refuses_any_character_outside_the_rule(odd, before, after):
    assume(any(c not in NAME_CHARS and not (c.isascii() and c.isalnum()) for c in odd))
    with pytest.raises(InvalidCategoryError):
        normalize_category(before + odd + after)


@PROPERTY
@given(st.integers(MAX_CATEGORY_CHARS + 1, 5000))
def test_normalize_category_refuses_names_over_the_length_limit(length):
    with pytest.raises(InvalidCategoryError):
        normalize_category("a" * length)


# --- to_bitmaps (the model server's input parser) ---------------------------------------------------------------

pixel_batches = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.just(PIXELS)),
    elements=st.floats(0, 255, allow_nan=False),
)
poisons = st.sampled_from([np.nan, np.inf, -np.inf, -1.0, -1e-6, 255.5, 256.0, 1e300])


@PROPERTY
@given(pixel_batches)
def test_to_bitmaps_turns_pixel_values_in_range_into_bitmaps(pixels):
    pixels[:, PIXELS // 2] = 200.0  # some ink, and values above 1 so they are not read as 0-1 floats
    out = to_bitmaps(pixels)
    assert out.dtype == np.uint8 and out.shape == pixels.shape and (out.max(axis=1) == 255).all()


@PROPERTY
@given(pixel_batches, poisons, st.data())
def test_to_bitmaps_refuses_nan_infinite_negative_and_over_255_values(pixels, poison, data):
    pixels[:, PIXELS // 2] = 200.0  # every image has ink, so the poison is the only fault
    row = data.draw(st.integers(0, pixels.shape[0] - 1))
    column = data.draw(st.integers(0, PIXELS - 1))
    pixels[row, column] = poison
    with pytest.raises(InvalidImageError, match="NaN|outside 0-255"):
        to_bitmaps(pixels)
    with pytest.raises(InvalidImageError, match="NaN|outside 0-255"):
        to_bitmaps(pixels.tolist())


def holds_whole_bitmaps(shape: tuple) -> bool:
    """784 values, or n >= 1 rows of 784 values each (any inner shape, e.g. (n, 28, 28))."""
    if len(shape) == 1:
        return shape[0] == PIXELS
    return len(shape) >= 2 and shape[0] > 0 and int(np.prod(shape[1:])) == PIXELS


odd_shapes = st.lists(st.sampled_from([0, 1, 2, 27, 28, 29, 783, 784, 785]), max_size=3).map(tuple)


@PROPERTY
@given(odd_shapes)
def test_to_bitmaps_refuses_arrays_of_the_wrong_size(shape):
    assume(int(np.prod(shape)) <= 100_000 and not holds_whole_bitmaps(shape))
    with pytest.raises(InvalidImageError):
        to_bitmaps(np.full(shape, 9.0))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=12,
)


@PROPERTY
@given(json_values)
def test_to_bitmaps_gives_bitmaps_or_invalid_image_error_for_any_json(value):
    try:
        out = to_bitmaps(value)
    except InvalidImageError:
        return
    assert out.dtype == np.uint8 and out.shape[1:] == (PIXELS,)
