"""Labelled drawings on disk: IMG_DATA_LOCATION/<category>/<utc-timestamp>_<uuid>.png."""

import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from doodle.files import TEMP_PREFIX, write_atomic

logger = logging.getLogger(__name__)

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageError(Exception):
    """The drawing could not be stored; nothing was kept."""


class StorageFullError(StorageError):
    """No space left for the drawing."""


class TooManyCategoriesError(ValueError):
    """A new category would pass the configured limit."""


def drawing_name() -> str:
    """A unique file name, without counting files: time for order, uuid for uniqueness."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}_{uuid.uuid4().hex[:12]}.png"


def save_drawing(root: Path, category: str, png: bytes) -> Path:
    """Write `png` atomically under root/category; `category` must already be normalised.

    Readers never see a partial PNG (see `doodle.files.write_atomic`), and a failed save keeps nothing.
    """
    target = Path(root) / category / drawing_name()
    try:
        with folder_lock(root, exclusive=False):  # the clean stage cannot remove the folder meanwhile
            write_atomic(target, png)
    except OSError as error:
        raise _storage_error(error, category) from None
    logger.info("drawing saved category=%s file=%s bytes=%d", category, target.name, len(png))
    return target


def _storage_error(error: OSError, category: str) -> StorageError:
    logger.error("drawing not saved category=%s", category, exc_info=error)
    if error.errno in _FULL:
        return StorageFullError("the drawing was not saved: the storage is full")
    return StorageError(f"the drawing was not saved: storage failed ({error.strerror})")


@contextmanager
def folder_lock(root: Path, exclusive: bool) -> Iterator[None]:
    """A lock on the drawings folder: saves share it; creating or removing category folders excludes them."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def make_category_folder(root: Path, category: str, known: Callable[[], set[str]], limit: int) -> None:
    """Create root/category, or raise TooManyCategoriesError if that would pass `limit` categories.

    Categories are `known()` (the pipeline's, read only for a new category) plus the folders under root.
    The check and the mkdir hold an exclusive lock on root, so concurrent saves, in any process, cannot
    pass the limit together.
    """
    root = Path(root)
    if (root / category).is_dir():
        return
    try:
        with folder_lock(root, exclusive=True):
            categories = known() | {p.name for p in root.iterdir() if p.is_dir()}
            if category not in categories and len(categories) >= limit:
                raise TooManyCategoriesError(
                    f"too many categories: at most {limit}; label the drawing with an existing one"
                )
            (root / category).mkdir(exist_ok=True)
    except OSError as error:
        raise _storage_error(error, category) from None


def _is_drawing(name: str) -> bool:
    return name.endswith(".png") and not name.startswith(TEMP_PREFIX)


class WaitingDrawings:
    """How many finished drawings wait in each category folder, from the shared store itself.

    Each call stats the category folders; a folder is listed again only when its mtime changed,
    or changed so recently that a save in the same clock tick could hide behind it. Any number of
    processes (backend replicas, the pipeline) share the store, so every one sees the same counts.
    """

    RECENT_NS = 2_000_000_000  # coarse file-system clocks (network shares) tick in up to 2 s

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._listed: dict[str, tuple[int, int]] = {}  # category -> (folder mtime, drawings)
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """Drawings per category, for categories with at least one."""
        with self._lock:
            try:
                folders = [entry for entry in os.scandir(self.root) if entry.is_dir()]
            except FileNotFoundError:
                folders = []
            now = time.time_ns()
            listed = {}
            for folder in folders:
                try:
                    mtime = folder.stat().st_mtime_ns
                    known = self._listed.get(folder.name)
                    if known and known[0] == mtime and now - mtime > self.RECENT_NS:
                        listed[folder.name] = known
                    else:
                        listed[folder.name] = (mtime, sum(_is_drawing(e.name) for e in os.scandir(folder.path)))
                except FileNotFoundError:  # the clean stage removed it meanwhile
                    continue
            self._listed = listed
            return {name: count for name, (_, count) in listed.items() if count}


def list_drawings(root: Path) -> dict[str, list[Path]]:
    """Finished PNGs per category folder, oldest first; temp files are skipped."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        pngs = sorted(p for p in folder.glob("*.png") if _is_drawing(p.name))
        if pngs:
            found[folder.name] = pngs
    return found
