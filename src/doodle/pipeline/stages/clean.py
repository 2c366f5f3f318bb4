"""Stage 7: remove empty category folders, keeping the root."""

import logging
from pathlib import Path

from doodle.pipeline.runner import StageContext, stage_main

logger = logging.getLogger(__name__)


def remove_empty_folders(root: Path) -> list[str]:
    removed = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []:
        if any(folder.iterdir()):
            continue
        try:
            folder.rmdir()
        except OSError as error:  # a save just wrote into it: keep it
            logger.info("folder kept category=%s reason=%s", folder.name, error.strerror)
            continue
        removed.append(folder.name)
    logger.info("empty folders removed count=%d", len(removed))
    return removed


def run(context: StageContext) -> dict:
    return {"removed": remove_empty_folders(context.settings.img_data_location)}


if __name__ == "__main__":
    stage_main("clean", run)
