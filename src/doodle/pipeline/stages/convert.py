"""Stage 3: turn the labelled PNGs into new npy rows, then delete exactly those PNGs."""

import logging
import shutil
from pathlib import Path

import numpy as np

from doodle.drawings import list_drawings
from doodle.imaging import InvalidImageError, decode_png, normalize_drawing
from doodle.pipeline.ledger import commit, read_rows, recover, write_rows
from doodle.pipeline.runner import StageContext, StageOutput, stage_main

logger = logging.getLogger(__name__)


def to_row(path: Path) -> np.ndarray:
    """One drawing as 784 uint8 values in Quick Draw's form (resized to 28x28 if needed)."""
    return normalize_drawing(decode_png(path.read_bytes())).reshape(784)


def convert(data_dir: Path, img_root: Path) -> dict[str, int]:
    """Convert the PNGs present now; drawings saved meanwhile wait for the next run."""
    ledger = recover(data_dir, img_root)
    converted: dict[str, int] = {}
    consumed: list[str] = []
    for category, pngs in list_drawings(img_root).items():
        rows = []
        for png in pngs:
            try:
                rows.append(to_row(png))
            except InvalidImageError as error:
                quarantine = Path(data_dir) / "rejected" / category
                quarantine.mkdir(parents=True, exist_ok=True)
                shutil.move(png, quarantine / png.name)
                logger.warning("drawing rejected file=%s/%s reason=%s", category, png.name, error)
                continue
            consumed.append(f"{category}/{png.name}")
        if rows:
            committed = read_rows(data_dir, "new", category, ledger.new.get(category, 0))
            write_rows(data_dir, "new", category, np.concatenate([committed, np.stack(rows)]))
            converted[category] = len(rows)
    for category, count in converted.items():
        ledger.new[category] = ledger.new.get(category, 0) + count
    ledger.consumed = consumed
    commit(data_dir, ledger)  # the commit point: rows are in, their PNGs are now garbage
    recover(data_dir, img_root)
    return converted


def run(context: StageContext) -> StageOutput:
    converted = convert(context.settings.data_dir, context.settings.img_data_location)
    return {"converted": converted, "total": sum(converted.values())}


if __name__ == "__main__":
    stage_main("convert", run)
