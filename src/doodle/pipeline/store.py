"""The `pipeline_runs` table (the design's db_util): one row per run, three columns per stage."""

import logging
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, create_engine, select, update

logger = logging.getLogger(__name__)

STAGES = ("scan", "merge", "convert", "version", "retrain", "register", "clean")


class Status(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    NOT_TRIGGERED = "not_triggered"


metadata = MetaData()


def _stage_columns() -> list[Column]:
    columns = []
    for n in range(1, len(STAGES) + 1):
        columns += [
            Column(f"stage_{n}_status", String(16), nullable=False, default=Status.WAITING.value),
            Column(f"stage_{n}_start", DateTime(timezone=True)),
            Column(f"stage_{n}_end", DateTime(timezone=True)),
        ]
    return columns


pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("start_time", DateTime(timezone=True), nullable=False),
    *_stage_columns(),
    Column("message", String(500)),
)


def now() -> datetime:
    return datetime.now(UTC)


def stage_number(stage: str) -> int:
    """'scan' -> 1 ... 'clean' -> 7."""
    try:
        return STAGES.index(stage) + 1
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}") from None


def connect(database_url: str) -> Engine:
    """An engine for `database_url`; SQLite files get their folder created."""
    if database_url.startswith("sqlite:///"):
        from pathlib import Path

        path = database_url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(database_url, pool_pre_ping=True)


def init_db(engine: Engine) -> None:
    metadata.create_all(engine)


def create_run(engine: Engine) -> int:
    """Insert a run with every stage waiting; returns its run_id."""
    with engine.begin() as connection:
        result = connection.execute(pipeline_runs.insert().values(start_time=now()))
        run_id = int(result.inserted_primary_key[0])
    logger.info("run created run_id=%d", run_id)
    return run_id


def update_stage(engine: Engine, run_id: int, stage: str, status: Status, message: str | None = None) -> None:
    """Set a stage's status; running stamps its start, complete/failed its end."""
    n = stage_number(stage)
    values: dict = {f"stage_{n}_status": status.value}
    if status is Status.RUNNING:
        values[f"stage_{n}_start"] = now()
    elif status in (Status.COMPLETE, Status.FAILED):
        values[f"stage_{n}_end"] = now()
    if message is not None:
        values["message"] = message[:500]
    with engine.begin() as connection:
        connection.execute(update(pipeline_runs).where(pipeline_runs.c.run_id == run_id).values(**values))


def mark_from(engine: Engine, run_id: int, first_stage: str, status: Status, message: str | None = None) -> None:
    """Give `first_stage` and every later stage the same status (failed or not_triggered)."""
    values: dict = {f"stage_{n}_status": status.value for n in range(stage_number(first_stage), len(STAGES) + 1)}
    if message is not None:
        values["message"] = message[:500]
    with engine.begin() as connection:
        connection.execute(update(pipeline_runs).where(pipeline_runs.c.run_id == run_id).values(**values))


def set_not_triggered(engine: Engine, run_id: int) -> None:
    """Stage 1 found too little: stages 2-7 will not run."""
    mark_from(engine, run_id, STAGES[1], Status.NOT_TRIGGERED)


def list_runs(engine: Engine, limit: int | None = None) -> list[dict]:
    """Every run as a dict of its columns, newest first."""
    query = select(pipeline_runs).order_by(pipeline_runs.c.run_id.desc()).limit(limit)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
