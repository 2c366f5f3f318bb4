"""The pipeline viewer (port 8001): the run table page, GET /pipeline_runs, /health and /metrics."""

import logging
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import create_model
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from doodle.config import Settings, get_settings
from doodle.drawings import list_drawings
from doodle.log import configure_logging
from doodle.pipeline import store
from doodle.pipeline.store import STAGES, Status
from doodle.web import add_last_resort_handler, metrics_response

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DB_CONNECT_TIMEOUT_S = 3  # libpq's connect_timeout, whole seconds: a dead database fails a request fast


class RunStoreUnavailableError(RuntimeError):
    """The run store could not be read; answered 503."""


# One row of pipeline_runs as sent to the page; datetimes are UTC ISO strings.
RunPublic = create_model(
    "RunPublic",
    run_id=(int, ...),
    start_time=(datetime, ...),
    **{
        f"stage_{n}_{field}": (str, ...) if field == "status" else (datetime | None, None)
        for n in range(1, len(STAGES) + 1)
        for field in ("status", "start", "end")
    },
    message=(str | None, None),
)


def connect_store(database_url: str) -> Engine:
    """store.connect, with a connect timeout on PostgreSQL unless the URL sets one."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(DB_CONNECT_TIMEOUT_S)})
        database_url = url.render_as_string(hide_password=False)
    return store.connect(database_url)


def _utc(value: datetime) -> datetime:
    # SQLite hands back the stored UTC times without a zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_runs(engine: Engine) -> list[dict]:
    """Every run, newest first, datetimes in UTC; [] while the pipeline has not created the table yet."""
    try:
        if not inspect(engine).has_table(store.pipeline_runs.name):
            return []
        runs = store.list_runs(engine)
    except SQLAlchemyError as error:
        logger.exception("run store read failed")
        reason = type(getattr(error, "orig", None) or error).__name__
        detail = f"run store unavailable: could not read pipeline runs from the database ({reason})"
        raise RunStoreUnavailableError(detail) from error
    return [{key: _utc(value) if isinstance(value, datetime) else value for key, value in run.items()} for run in runs]


def store_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        logger.exception("run store health check failed")
        return False
    return True


def stage_seconds(run: dict, n: int) -> float | None:
    """How long stage `n` took, when it has both a start and an end."""
    start, end = run[f"stage_{n}_start"], run[f"stage_{n}_end"]
    if start is None or end is None or end < start:
        return None
    return (end - start).total_seconds()


def last_success_end(runs: list[dict]) -> datetime | None:
    """End of the newest run whose seven stages all completed."""
    for run in runs:
        if all(run[f"stage_{n}_status"] == Status.COMPLETE for n in range(1, len(STAGES) + 1)):
            ends = [run[f"stage_{n}_end"] for n in range(1, len(STAGES) + 1) if run[f"stage_{n}_end"] is not None]
            return max(ends, default=run["start_time"])
    return None


class PipelineCollector(Collector):
    """Reads the run store and the drawings folder at scrape time."""

    def __init__(self, engine: Engine, img_data_location: Path) -> None:
        self.engine = engine
        self.img_data_location = Path(img_data_location)

    def collect(self) -> Iterator[Metric]:
        try:
            runs = read_runs(self.engine)
        except RunStoreUnavailableError:
            runs = None
        yield GaugeMetricFamily(
            "doodle_pipeline_store_up", "1 when the run store answered this scrape", value=int(runs is not None)
        )
        if runs is not None:
            yield from self._run_metrics(runs)
        yield from self._drawing_metrics()

    def _run_metrics(self, runs: list[dict]) -> Iterator[Metric]:
        latest = runs[0] if runs else None
        status = GaugeMetricFamily(
            "doodle_pipeline_stage_status", "1 for the latest run's status of each stage", labels=["stage", "status"]
        )
        duration = GaugeMetricFamily(
            "doodle_pipeline_stage_duration_seconds", "Stage durations of the latest run, once ended", labels=["stage"]
        )
        for n, stage in enumerate(STAGES, start=1):
            current = latest[f"stage_{n}_status"] if latest else None
            for value in Status:
                status.add_metric([stage, value.value], float(current == value))
            seconds = stage_seconds(latest, n) if latest else None
            if seconds is not None:
                duration.add_metric([stage], seconds)
        success = last_success_end(runs)
        yield status
        yield duration
        yield GaugeMetricFamily(
            "doodle_pipeline_last_run_id",
            "run_id of the latest run, 0 before any",
            value=latest["run_id"] if latest else 0,
        )
        yield GaugeMetricFamily(
            "doodle_pipeline_last_success_timestamp_seconds",
            "End of the latest run whose seven stages all completed, 0 if none",
            value=success.timestamp() if success else 0,
        )
        yield CounterMetricFamily("doodle_pipeline_runs", "Pipeline runs in the run store", value=len(runs))

    def _drawing_metrics(self) -> Iterator[Metric]:
        try:
            pngs = [png for found in list_drawings(self.img_data_location).values() for png in found]
        except OSError:
            logger.exception("drawings folder unreadable path=%s", self.img_data_location)
            return
        mtimes = []
        for png in pngs:
            try:
                mtimes.append(png.stat().st_mtime)
            except FileNotFoundError:
                continue  # taken by the pipeline meanwhile
        yield GaugeMetricFamily(
            "doodle_pipeline_waiting_drawings", "Labelled PNGs waiting for the next run", value=len(mtimes)
        )
        yield GaugeMetricFamily(
            "doodle_pipeline_oldest_waiting_drawing_timestamp_seconds",
            "Modification time of the oldest waiting PNG, 0 if none",
            value=min(mtimes, default=0),
        )


async def _store_unavailable(request: Request, error: Exception) -> JSONResponse:
    logger.warning("request failed path=%s status=503 reason=%s", request.url.path, error)
    return JSONResponse({"detail": str(error)}, status_code=503)


def create_dashboard_app(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, settings.log_dir / "dashboard_backend.log")
    engine = connect_store(settings.database_url)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(engine, settings.img_data_location))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        logger.info("dashboard started database=%s", engine.url.render_as_string(hide_password=True))
        yield
        engine.dispose()
        logger.info("dashboard stopped")

    app = FastAPI(title="doodle pipeline viewer", lifespan=lifespan, debug=False)
    app.add_exception_handler(RunStoreUnavailableError, _store_unavailable)
    add_last_resort_handler(app)

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            logger.info("request method=%s path=%s status=500", request.method, request.url.path)
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "request method=%s path=%s status=%d ms=%.1f",
            request.method,
            request.url.path,
            response.status_code,
            elapsed_ms,
        )
        return response

    # Plain `def` routes: they block on the database, so they run in the thread pool.
    @app.get("/pipeline_runs", response_model=list[RunPublic], responses={503: {"description": "run store down"}})
    def pipeline_runs() -> list[dict]:
        """Every run, newest first, with all its columns."""
        runs = read_runs(engine)
        logger.info("runs listed rows=%d", len(runs))
        return runs

    @app.get("/health")
    def health():
        """200 only when the run store answers."""
        if store_answers(engine):
            return {"status": "ok"}
        return JSONResponse({"status": "unavailable", "detail": "run store unavailable"}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        # Not prometheus-client's ASGI app: that would run the DB reads on the event loop.
        return metrics_response(request, registry)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app


def create_dashboard_app_from_env() -> FastAPI:
    """Zero-argument factory for uvicorn."""
    return create_dashboard_app(get_settings())
