"""The seven stages, each runnable as `python -m doodle.pipeline.stages.<stage> --run-dir DIR`.

This package module holds only their vocabulary (names, order, statuses), so the runner, the
orchestrator, the CLI and the viewer can share it without importing a stage or the database.
"""

from enum import StrEnum

STAGES = ("scan", "merge", "convert", "version", "retrain", "register", "clean")


class Status(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    NOT_TRIGGERED = "not_triggered"


def stage_number(stage: str) -> int:
    """'scan' -> 1 ... 'clean' -> 7."""
    try:
        return STAGES.index(stage) + 1
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}") from None
