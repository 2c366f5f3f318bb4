"""Files that appear whole or not at all, and npy arrays as bytes.

A leaf module: it depends on nothing else in doodle, so drawings, the pipeline and
the model code can all share it.
"""

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

TEMP_PREFIX = "."  # temp files are hidden, so globs and listings of finished files skip them
TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """Where `write_atomic` writes `path` before renaming it: `.<name>.tmp` beside it."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_SUFFIX}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file, fsync it, then rename it over `path`, creating the folder if needed.

    Readers see the old file or the new one, never a part. On failure the temp file is removed
    where the file system allows it; a crash leaves at most the temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # e.g. a read-only file system refuses even this
            temp.unlink(missing_ok=True)
        raise


def npy_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """`array` in .npy format, without pickled objects."""
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()
