"""The run store: the `pipeline_runs` table (the design's db_util), one row per run, three columns per stage.

Only this module knows the column layout (`stage_<n>_status`, `stage_<n>_start`, `stage_<n>_end`);
everyone else reads a `Run`. Any database failure surfaces as `RunStoreUnavailableError`.
"""

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import create_model
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from doodle.pipeline.stages import STAGES, Status, stage_number

logger = logging.getLogger(__name__)

MESSAGE_CHARS = 500


class RunStoreUnavailableError(RuntimeError):
    """The run store (DATABASE_URL) did not answer.

    The message names what failed and the driver's error type, and is fit to show to clients;
    `detail` holds the driver's own first line, for operators.
    """

    def __init__(self, action: str, cause: BaseException) -> None:
        super().__init__(f"run store unavailable: could not {action} ({type(cause).__name__})")
        lines = str(cause).strip().splitlines()
        self.detail = lines[0] if lines else type(cause).__name__


@contextmanager
def answering(action: str) -> Iterator[None]:
    """Turn a database error inside into RunStoreUnavailableError, saying which `action` failed."""
    try:
        yield
    except SQLAlchemyError as error:
        cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
        raise RunStoreUnavailableError(action, cause) from error


def _column(stage: str, field: str) -> str:
    """The column of one stage's `field` (status, start or end)."""
    return f"stage_{stage_number(stage)}_{field}"


metadata = MetaData()


def _stage_columns() -> list[Column[Any]]:
    columns: list[Column[Any]] = []
    for stage in STAGES:
        columns += [
            Column(_column(stage, "status"), String(16), nullable=False, default=Status.WAITING.value),
            Column(_column(stage, "start"), DateTime(timezone=True)),
            Column(_column(stage, "end"), DateTime(timezone=True)),
        ]
    return columns


pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("start_time", DateTime(timezone=True), nullable=False),
    *_stage_columns(),
    Column("message", String(MESSAGE_CHARS)),
)


def _public_fields() -> dict[str, Any]:
    stage_fields = {
        _column(stage, field): (str, ...) if field == "status" else (datetime | None, None)
        for stage in STAGES
        for field in ("status", "start", "end")
    }
    return {"run_id": (int, ...), "start_time": (datetime, ...), **stage_fields, "message": (str | None, None)}


# One row as GET /pipeline_runs sends it: every column, datetimes as UTC ISO strings.
RunPublic = create_model("RunPublic", **_public_fields())


@dataclass(frozen=True)
class StageRecord:
    status: Status
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class Run:
    """One row of `pipeline_runs`; datetimes are UTC."""

    run_id: int
    start_time: datetime
    stages: Mapping[str, StageRecord]  # every name in STAGES
    message: str | None

    def status(self, stage: str) -> Status:
        return self.stages[stage].status

    def started(self, stage: str) -> datetime | None:
        return self.stages[stage].start

    def ended(self, stage: str) -> datetime | None:
        return self.stages[stage].end

    def seconds(self, stage: str) -> float | None:
        """How long `stage` took, when it has both a start and an end."""
        start, end = self.started(stage), self.ended(stage)
        if start is None or end is None or end < start:
            return None
        return (end - start).total_seconds()

    def succeeded(self) -> bool:
        """Every stage completed."""
        return all(record.status is Status.COMPLETE for record in self.stages.values())

    def finished(self) -> datetime:
        """The latest stage end, or the start time before any stage ended."""
        return max((record.end for record in self.stages.values() if record.end is not None), default=self.start_time)

    def public(self) -> dict[str, object]:
        """The row as `RunPublic` fields, column by column."""
        row: dict[str, object] = {"run_id": self.run_id, "start_time": self.start_time}
        for stage, record in self.stages.items():
            row[_column(stage, "status")] = record.status.value
            row[_column(stage, "start")] = record.start
            row[_column(stage, "end")] = record.end
        row["message"] = self.message
        return row


def _to_run(row: RowMapping) -> Run:
    stages = {
        stage: StageRecord(
            Status(row[_column(stage, "status")]),
            _utc_or_none(row[_column(stage, "start")]),
            _utc_or_none(row[_column(stage, "end")]),
        )
        for stage in STAGES
    }
    return Run(int(row["run_id"]), _utc(row["start_time"]), stages, row["message"])


def _utc(value: datetime) -> datetime:
    # SQLite hands back the stored UTC times without a zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def last_success_end(runs: Sequence[Run]) -> datetime | None:
    """End of the newest run whose seven stages all completed; `runs` are newest first."""
    for run in runs:
        if run.succeeded():
            return run.finished()
    return None


def now() -> datetime:
    return datetime.now(UTC)


def connect(database_url: str, connect_timeout_s: int | None = None) -> Engine:
    """An engine for `database_url`; SQLite files get their folder created.

    `connect_timeout_s` bounds each new PostgreSQL connection (libpq's whole seconds) unless the URL sets one.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    if url.get_backend_name() == "postgresql" and connect_timeout_s and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(connect_timeout_s)})
    return create_engine(url, pool_pre_ping=True)


def init_db(engine: Engine) -> None:
    with answering("create the pipeline_runs table"):
        metadata.create_all(engine)


def check(engine: Engine) -> None:
    """Raise RunStoreUnavailableError unless the database answers a trivial query."""
    with answering("reach the database"), engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def create_run(engine: Engine) -> int:
    """Insert a run with every stage waiting; returns its run_id."""
    with answering("create a run"), engine.begin() as connection:
        inserted = connection.execute(pipeline_runs.insert().values(start_time=now()).returning(pipeline_runs.c.run_id))
        run_id = int(inserted.scalar_one())
    logger.info("run created run_id=%d", run_id)
    return run_id


def update_stage(engine: Engine, run_id: int, stage: str, status: Status, message: str | None = None) -> None:
    """Set a stage's status; running stamps its start, complete/failed its end."""
    values: dict[str, object] = {_column(stage, "status"): status.value}
    if status is Status.RUNNING:
        values[_column(stage, "start")] = now()
    elif status in (Status.COMPLETE, Status.FAILED):
        values[_column(stage, "end")] = now()
    _update(engine, run_id, values, message, action=f"record stage {stage}")


def mark_from(engine: Engine, run_id: int, first_stage: str, status: Status, message: str | None = None) -> None:
    """Give `first_stage` and every later stage the same status (failed or not_triggered)."""
    later = STAGES[stage_number(first_stage) - 1 :]
    values: dict[str, object] = {_column(stage, "status"): status.value for stage in later}
    _update(engine, run_id, values, message, action=f"record stages from {first_stage}")


def set_not_triggered(engine: Engine, run_id: int) -> None:
    """Stage 1 found too little: stages 2-7 will not run."""
    mark_from(engine, run_id, STAGES[1], Status.NOT_TRIGGERED)


def _update(engine: Engine, run_id: int, values: dict[str, object], message: str | None, action: str) -> None:
    if message is not None:
        values["message"] = message[:MESSAGE_CHARS]
    with answering(action), engine.begin() as connection:
        connection.execute(update(pipeline_runs).where(pipeline_runs.c.run_id == run_id).values(**values))


def list_runs(engine: Engine, limit: int | None = None) -> list[Run]:
    """Runs newest first; [] before the pipeline has created the table."""
    query = select(pipeline_runs).order_by(pipeline_runs.c.run_id.desc()).limit(limit)
    with answering("read pipeline runs from the database"):
        if not inspect(engine).has_table(pipeline_runs.name):
            return []
        with engine.connect() as connection:
            return [_to_run(row._mapping) for row in connection.execute(query)]
