"""What every stage shares: its run folder, its outputs, and its entry point."""

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doodle.config import Settings, get_settings
from doodle.files import write_atomic
from doodle.log import configure_logging
from doodle.pipeline.stages import stage_number

logger = logging.getLogger(__name__)

StageOutput = dict[str, Any]  # what a stage leaves for later stages, as JSON in <run_dir>/<stage>.json


@dataclass
class StageContext:
    settings: Settings
    run_dir: Path  # var/pipeline/runs/<run_id>: outputs that later stages read

    def write_output(self, stage: str, output: StageOutput) -> None:
        write_atomic(self.run_dir / f"{stage}.json", json.dumps(output, indent=1, sort_keys=True).encode())

    def read_output(self, stage: str) -> StageOutput:
        path = self.run_dir / f"{stage}.json"
        if not path.exists():
            raise RuntimeError(f"stage {stage} left no output in {self.run_dir}")
        output: StageOutput = json.loads(path.read_text())
        return output


def stage_main(stage: str, run: Callable[[StageContext], StageOutput]) -> None:
    """Entry point of `python -m doodle.pipeline.stages.<stage>`: exit 0 on success, 1 on failure."""
    parser = argparse.ArgumentParser(prog=f"doodle.pipeline.stages.{stage}")
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_dir / f"stage{stage_number(stage)}.log")
    context = StageContext(settings, args.run_dir)
    try:
        output = run(context)
    except Exception as error:
        logger.exception("stage failed stage=%s", stage)
        print(f"{type(error).__name__}: {error}", file=sys.stderr)  # noqa: T201  one line for the run store
        sys.exit(1)
    context.write_output(stage, output)
    logger.info("stage done stage=%s output=%s", stage, json.dumps(output)[:300])
