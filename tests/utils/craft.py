"""Hand-made image files for hostile tests: real encodings, and headers that lie about their size."""

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encoded(array: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header for a grayscale image of any size, with almost no pixel data behind it."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return PNG_SIGNATURE + header + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header says it is `width` x `height`."""
    data = bytearray(encoded(np.full((16, 16), 200, np.uint8), "JPEG"))
    frame = data.index(b"\xff\xc0")  # SOF0: marker, length, precision, height, width
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_with_chunk_length(chunk: bytes, length: int) -> bytes:
    """A small real PNG whose `chunk` says it holds `length` bytes."""
    png = bytearray(encoded(np.full((4, 4), 9, np.uint8)))
    start = png.index(chunk) - 4
    png[start : start + 4] = struct.pack(">I", length)
    return bytes(png)
