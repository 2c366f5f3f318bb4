"""Download Google's public Quick, Draw! bitmaps: the first rows of each category's `.npy` file.

Google's files hold 100k-300k drawings each (80-250 MB). A `.npy` file is a short header
followed by the rows, so reading the header and then only the bytes of the rows wanted
fetches a slice without downloading the whole file.

The rows each category's file holds are recorded in `.available_rows.json` in the output
folder, so a category with fewer rows than asked for counts as fetched in full next time.
"""

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
from tqdm import tqdm

from doodle.files import npy_bytes, write_atomic
from doodle.imaging import PIXELS

logger = logging.getLogger(__name__)

_PREFIX_BYTES = 10  # magic string, version and header length of a .npy file
AVAILABLE_ROWS = ".available_rows.json"  # category -> rows in Google's file


class FetchError(RuntimeError):
    """A category could not be fetched; the message says which and why."""


def category_url(base_url: str, category: str) -> str:
    """Google names files by the category's words: smiley_face -> 'smiley%20face.npy'."""
    return base_url.rstrip("/") + "/" + quote(category.replace("_", " ")) + ".npy"


class _Stream:
    """Reads exact byte counts from an HTTP body that arrives in chunks of any size."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = bytearray()

    def read(self, size: int, progress: tqdm | None = None) -> bytes:
        while len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
            if progress is not None:
                progress.update(min(len(chunk), size - progress.n))
        taken = bytes(self.buffer[:size])
        del self.buffer[:size]
        return taken


def _read_header(stream: _Stream, url: str) -> tuple[int, int]:
    prefix = stream.read(_PREFIX_BYTES)
    try:
        header = io.BytesIO(prefix)
        version = np.lib.format.read_magic(header)
        if version == (1, 0):
            length = int.from_bytes(prefix[8:10], "little")
            read_header = np.lib.format.read_array_header_1_0
        else:  # versions 2 and 3 use a 4-byte length
            prefix += stream.read(2)
            length = int.from_bytes(prefix[8:12], "little")
            read_header = np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(io.BytesIO(prefix[8:] + stream.read(length)))
    except ValueError as error:
        raise FetchError(f"{url} is not a .npy file: {error}") from None
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != PIXELS or fortran_order:
        raise FetchError(f"{url}: expected uint8 rows of {PIXELS} pixels, got {dtype} {shape}")
    return int(shape[0]), int(shape[1])


@dataclass(frozen=True)
class Fetched:
    path: Path  # out_dir/<category>.npy
    available: int  # rows in Google's file


def fetch_category(client: httpx.Client, base_url: str, category: str, out_dir: Path, rows: int) -> Fetched:
    """Save the first `rows` drawings of `category` as `out_dir/<category>.npy` (fewer if Google has fewer).

    The file appears whole or not at all (see `doodle.files.write_atomic`).
    """
    url = category_url(base_url, category)
    target = Path(out_dir) / f"{category}.npy"
    try:
        with client.stream("GET", url) as response:
            if response.status_code == 404:
                raise FetchError(f"{category}: no such Quick, Draw! category ({url} answered 404)")
            if response.status_code != 200:
                raise FetchError(f"{category}: {url} answered HTTP {response.status_code}")
            stream = _Stream(response.iter_bytes())
            available, _ = _read_header(stream, url)
            wanted = min(rows, available)
            with tqdm(total=wanted * PIXELS, unit="B", unit_scale=True, desc=category, leave=False) as progress:
                body = stream.read(wanted * PIXELS, progress)
    except httpx.HTTPError as error:
        raise FetchError(f"{category}: cannot download {url}: {error}") from None
    if len(body) < wanted * PIXELS:
        raise FetchError(f"{category}: the download stopped after {len(body):,} of {wanted * PIXELS:,} bytes")
    write_atomic(target, npy_bytes(np.frombuffer(body, dtype=np.uint8).reshape(wanted, PIXELS)))
    logger.info("fetched category=%s rows=%d available=%d url=%s", category, wanted, available, url)
    return Fetched(target, available)


def fetch(categories: list[str], out_dir: Path, rows: int, base_url: str) -> list[Path]:
    """Fetch each category in turn, keeping a category already on disk with `rows` rows or all Google has."""
    if rows < 1:
        raise FetchError(f"rows must be at least 1, got {rows}")
    out_dir = Path(out_dir)
    available = _read_available(out_dir)
    saved = []
    with httpx.Client(timeout=httpx.Timeout(30.0), follow_redirects=True) as client:
        for category in tqdm(categories, desc="categories", unit="category"):
            existing = out_dir / f"{category}.npy"
            if _rows_on_disk(existing) >= min(rows, available.get(category, rows)):
                saved.append(existing)
                continue
            fetched = fetch_category(client, base_url, category, out_dir, rows)
            available[category] = fetched.available
            write_atomic(out_dir / AVAILABLE_ROWS, json.dumps(available, indent=1, sort_keys=True).encode())
            saved.append(fetched.path)
    return saved


def _rows_on_disk(path: Path) -> int:
    """Rows in an npy file, read from its header; 0 when there is no file."""
    if not path.exists():
        return 0
    return int(np.load(path, mmap_mode="r").shape[0])


def _read_available(out_dir: Path) -> dict[str, int]:
    path = out_dir / AVAILABLE_ROWS
    if not path.exists():
        return {}
    return {str(category): int(rows) for category, rows in json.loads(path.read_text()).items()}
