"""Stage 7: remove empty category folders, keeping the root."""

import logging
from pathlib import Path

from doodle.drawings import folder_lock
from doodle.pipeline.runner import StageContext, StageOutput, stage_main

logger = logging.getLogger(__name__)


def remove_empty_folders(root: Path) -> list[str]:
    """Remove empty category folders, holding the folder lock so no save is writing into one meanwhile."""
    if not Path(root).is_dir():
        return []
    removed: list[str] = []
    with folder_lock(root, exclusive=True):
        for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            if not any(folder.iterdir()):
                folder.rmdir()
                removed.append(folder.name)
    logger.info("empty folders removed count=%d", len(removed))
    return removed


def run(context: StageContext) -> StageOutput:
    return {"removed": remove_empty_folders(context.settings.img_data_location)}


if __name__ == "__main__":
    stage_main("clean", run)
