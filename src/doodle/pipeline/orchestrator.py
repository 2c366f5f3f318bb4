"""Run the seven stages as subprocesses and record each run in `pipeline_runs`."""

import fcntl
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from doodle.config import Settings, settings_env
from doodle.drawings import WaitingDrawings
from doodle.pipeline import runs
from doodle.pipeline.runner import StageContext
from doodle.pipeline.runs import RunStoreUnavailableError
from doodle.pipeline.stages import STAGES, Status

logger = logging.getLogger(__name__)


class PipelineBusyError(RuntimeError):
    """Another pipeline run holds the lock."""


# PostgreSQL run stores take the run lock as pg_try_advisory_lock(RUN_LOCK_KEY, hashtext(current_schema())):
# one lock per run store, shared by every machine using it, and independent between schemas of one database.
RUN_LOCK_KEY = 0x646F6F64  # "dood"
_LOCK_KEYS = "CAST(:key AS integer), hashtext(current_schema())"
_LOCK_HOLDER = text(
    "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid = CAST(:key AS integer)::oid AND l.objid = hashtext(current_schema())::oid"
)


@contextmanager
def run_lock(settings: Settings, engine: Engine) -> Iterator[None]:
    """One pipeline run at a time: in PostgreSQL for a PostgreSQL run store, else a file lock in PIPELINE_DIR."""
    lock = advisory_lock(engine) if engine.dialect.name == "postgresql" else file_lock(settings.pipeline_dir)
    with lock:
        yield


@contextmanager
def file_lock(pipeline_dir: Path) -> Iterator[None]:
    """An exclusive lock the kernel releases when its holder dies, even by SIGKILL."""
    pipeline_dir.mkdir(parents=True, exist_ok=True)
    path = pipeline_dir / "run.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise PipelineBusyError(f"another pipeline run is active (pid {holder}); try again when it ends") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


@contextmanager
def advisory_lock(engine: Engine) -> Iterator[None]:
    """A session lock on a connection kept for the run; PostgreSQL releases it when that connection dies."""
    keys = {"key": RUN_LOCK_KEY}
    with runs.answering("take the run lock"):
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with connection:
        with runs.answering("take the run lock"):
            if not connection.execute(text(f"SELECT pg_try_advisory_lock({_LOCK_KEYS})"), keys).scalar_one():
                raise PipelineBusyError(
                    f"another pipeline run is active ({_lock_holder(connection)}); try again when it ends"
                )
            name = f"doodle pipeline on {socket.gethostname()} pid {os.getpid()}"  # what _lock_holder shows others
            connection.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
        try:
            yield
        finally:
            # Fails only when the connection died, which released the lock already.
            with suppress(SQLAlchemyError):
                connection.execute(text(f"SELECT pg_advisory_unlock({_LOCK_KEYS})"), keys)


def _lock_holder(connection: Connection) -> str:
    row = connection.execute(_LOCK_HOLDER, {"key": RUN_LOCK_KEY}).first()
    if row is None:
        return "holder unknown"  # it has just released the lock
    return f"{row.application_name or 'unnamed client'} at {row.client_addr or 'a local socket'}"


# Interrupted in one of these, a run had converted drawings that no model was then trained on.
_UNTRAINED_IF_INTERRUPTED_IN = ("version", "retrain", "register")


def close_interrupted_runs(engine: Engine) -> bool:
    """A run left 'running' by a crash: mark its running stage and the later ones failed.

    Returns True when such a run had converted drawings but not yet registered a model trained on them.
    """
    untrained = False
    for run in runs.list_runs(engine):
        running = [stage for stage in STAGES if run.status(stage) is Status.RUNNING]
        if running:
            message = f"interrupted during stage {running[0]}"
            runs.mark_from(engine, run.run_id, running[0], Status.FAILED, message)
            logger.warning("closed interrupted run run_id=%d stage=%s", run.run_id, running[0])
            untrained |= running[0] in _UNTRAINED_IF_INTERRUPTED_IN
    return untrained


def run_stage(stage: str, run_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run one stage as `python -m doodle.pipeline.stages.<stage>`; returns (exit code, last stderr line)."""
    done = subprocess.run(
        [sys.executable, "-m", f"doodle.pipeline.stages.{stage}", "--run-dir", str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, (lines[-1] if lines else "")


Report = Callable[[str], object]  # where progress lines go: print for the CLI, a logger for watch


def run_pipeline(settings: Settings, engine: Engine, report: Report = print) -> int:
    """Execute one run; returns 0 on success or when not triggered, 1 when a stage failed.

    Raises RunStoreUnavailableError if the run store fails: the run stops before its next stage, and
    the next run records it as interrupted and, if it had converted drawings, retrains on them.
    """
    try:
        return _run(settings, engine, report)
    except RunStoreUnavailableError as error:
        logger.error("run store failed; run stopped: %s", error.detail)
        raise


def _run(settings: Settings, engine: Engine, report: Report) -> int:
    with run_lock(settings, engine):
        runs.init_db(engine)
        redo = close_interrupted_runs(engine)
        run_id = runs.create_run(engine)
        run_dir = settings.pipeline_dir / "runs" / str(run_id)
        shutil.rmtree(run_dir, ignore_errors=True)  # left by a run store that was since replaced
        run_dir.mkdir(parents=True)
        context = StageContext(settings, run_dir)
        env = {**os.environ, **settings_env(settings)}
        report(f"pipeline run {run_id}")
        for n, stage in enumerate(STAGES, start=1):
            runs.update_stage(engine, run_id, stage, Status.RUNNING)
            started = time.perf_counter()
            code, reason = run_stage(stage, run_dir, env)
            seconds = time.perf_counter() - started
            if code != 0:
                runs.update_stage(engine, run_id, stage, Status.FAILED)
                runs.mark_from(engine, run_id, stage, Status.FAILED, message=f"{stage}: {reason or code}")
                logger.error("stage failed stage=%s run_id=%d reason=%s", stage, run_id, reason)
                report(f"  {n}/7 {stage:<8} failed after {seconds:.1f}s: {reason}")
                return 1
            runs.update_stage(engine, run_id, stage, Status.COMPLETE)
            logger.info("stage done stage=%s run_id=%d seconds=%.1f", stage, run_id, seconds)
            report(f"  {n}/7 {stage:<8} complete in {seconds:.1f}s")
            if stage == "scan":
                found = context.read_output("scan")["total"]
                if redo:
                    report("  an interrupted run left converted drawings untrained: retraining on them")
                elif found < settings.min_new_images:
                    runs.set_not_triggered(engine, run_id)
                    message = f"{found} new drawings, fewer than MIN_NEW_IMAGES={settings.min_new_images}"
                    runs.update_stage(engine, run_id, "scan", Status.COMPLETE, message=message)
                    report(f"  not triggered: {message}")
                    return 0
        report(f"pipeline run {run_id} complete")
        return 0


def watch(settings: Settings, engine: Engine, interval_s: float, max_checks: int | None = None) -> None:
    """Check every `interval_s`; run the pipeline when MIN_NEW_IMAGES drawings wait."""
    checks = 0
    store = WaitingDrawings(settings.img_data_location)  # counts as the backend's GET /model does
    while max_checks is None or checks < max_checks:
        checks += 1
        waiting = sum(store.counts().values())
        if waiting >= settings.min_new_images:
            logger.info("watch triggering run waiting=%d", waiting)
            try:
                run_pipeline(settings, engine, report=logger.info)
            except (PipelineBusyError, RunStoreUnavailableError) as error:
                logger.warning("watch skipped: %s", error)
        time.sleep(interval_s)
