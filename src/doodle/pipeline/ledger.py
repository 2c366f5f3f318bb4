"""Crash-safe training data: npy files that only grow, and a ledger that commits them.

Layout under the data folder:
    npy/old/<category>.npy   training data, uint8 (n, 784)
    npy/new/<category>.npy   drawings converted since the last merge
    ledger.json              committed row counts and the PNGs already converted

A stage first writes grown npy files (temp file, then rename), then commits by
atomically replacing ledger.json. Rows past the ledger's count were never
committed: `recover` truncates them. PNGs listed as consumed are already in
new/, so `recover` finishes deleting them instead of converting them again.
A SIGKILL at any point therefore loses no drawing and counts none twice.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from doodle.files import TEMP_PREFIX, TEMP_SUFFIX, npy_bytes, write_atomic

logger = logging.getLogger(__name__)

LEDGER = "ledger.json"
KINDS = ("old", "new")

Rows = npt.NDArray[np.uint8]  # (n, 784), one drawing per row


@dataclass
class Ledger:
    old: dict[str, int] = field(default_factory=dict)  # category -> committed rows
    new: dict[str, int] = field(default_factory=dict)
    consumed: list[str] = field(default_factory=list)  # PNG paths relative to IMG_DATA_LOCATION

    def counts(self, kind: str) -> dict[str, int]:
        """Committed rows per category in npy/<kind>/."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
        return self.old if kind == "old" else self.new

    def categories(self) -> set[str]:
        """Categories with committed rows, merged or waiting to be."""
        return {category for kind in KINDS for category, rows in self.counts(kind).items() if rows}


def npy_path(data_dir: Path, kind: str, category: str) -> Path:
    return Path(data_dir) / "npy" / kind / f"{category}.npy"


def load_ledger(data_dir: Path) -> Ledger:
    path = Path(data_dir) / LEDGER
    if not path.exists():
        return Ledger()
    return Ledger(**json.loads(path.read_text()))


def commit(data_dir: Path, ledger: Ledger) -> None:
    write_atomic(Path(data_dir) / LEDGER, json.dumps(asdict(ledger), indent=1, sort_keys=True).encode())


def committed_categories(data_dir: Path) -> set[str]:
    """The user categories the next model learns: those with committed rows in `data_dir`."""
    return load_ledger(data_dir).categories()


def read_rows(data_dir: Path, kind: str, category: str, rows: int) -> Rows:
    """The first `rows` committed rows of one file, uint8 (rows, 784)."""
    path = npy_path(data_dir, kind, category)
    if rows == 0 or not path.exists():
        return np.zeros((0, 784), np.uint8)
    return np.array(np.load(path, mmap_mode="r")[:rows], dtype=np.uint8)


def write_rows(data_dir: Path, kind: str, category: str, images: npt.ArrayLike) -> None:
    """Atomically replace one file with `images` (uint8 (n, 784))."""
    rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1, 784)
    write_atomic(npy_path(data_dir, kind, category), npy_bytes(rows))


def recover(data_dir: Path, img_root: Path) -> Ledger:
    """Bring files back to the committed state and finish deleting consumed PNGs."""
    data_dir = Path(data_dir)
    ledger = load_ledger(data_dir)
    for kind in KINDS:
        counts = ledger.counts(kind)
        folder = data_dir / "npy" / kind
        for path in sorted(folder.glob("*.npy")) if folder.exists() else []:
            committed = counts.get(path.stem, 0)
            rows = np.load(path, mmap_mode="r").shape[0]
            if rows != committed:
                logger.warning("truncating uncommitted rows file=%s rows=%d committed=%d", path, rows, committed)
                write_rows(data_dir, kind, path.stem, read_rows(data_dir, kind, path.stem, committed))
        for temp in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if folder.exists() else []:
            temp.unlink()
    if ledger.consumed:
        for relative in ledger.consumed:
            (Path(img_root) / relative).unlink(missing_ok=True)
        logger.info("deleted converted drawings count=%d", len(ledger.consumed))
        ledger.consumed = []
        commit(data_dir, ledger)
    return ledger
