"""Stage 2: stack the previous run's new rows onto the training data, per category."""

from pathlib import Path

import numpy as np

from doodle.pipeline.ledger import commit, npy_path, read_rows, recover, write_rows
from doodle.pipeline.runner import StageContext, StageOutput, stage_main


def merge(data_dir: Path, img_root: Path) -> dict[str, int]:
    """Move every committed new row into old/; returns rows merged per category."""
    ledger = recover(data_dir, img_root)
    pending = {category: rows for category, rows in ledger.new.items() if rows}
    for category, rows in pending.items():
        old = read_rows(data_dir, "old", category, ledger.old.get(category, 0))
        new = read_rows(data_dir, "new", category, rows)
        write_rows(data_dir, "old", category, np.concatenate([old, new]))
    for category, rows in pending.items():
        ledger.old[category] = ledger.old.get(category, 0) + rows
        ledger.new[category] = 0
    commit(data_dir, ledger)
    for category in pending:
        npy_path(data_dir, "new", category).unlink(missing_ok=True)
    return pending


def run(context: StageContext) -> StageOutput:
    merged = merge(context.settings.data_dir, context.settings.img_data_location)
    return {"merged": merged, "total": sum(merged.values())}


if __name__ == "__main__":
    stage_main("merge", run)
