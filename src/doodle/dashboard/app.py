"""The pipeline viewer (port 8001): the run table page, GET /pipeline_runs, /health and /metrics."""

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from doodle.config import Settings
from doodle.drawings import list_drawings
from doodle.log import configure_logging
from doodle.pipeline import runs
from doodle.pipeline.runs import Run, RunPublic, RunStoreUnavailableError
from doodle.pipeline.stages import STAGES, Status
from doodle.web import add_last_resort_handler, metrics_response

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DB_CONNECT_TIMEOUT_S = 3  # libpq's connect_timeout, whole seconds: a dead database fails a request fast
POLLED_PATHS = frozenset({"/pipeline_runs", "/health", "/metrics"})  # the page and Prometheus ask every few seconds


class PipelineCollector(Collector):
    """Reads the run store and the drawings folder at scrape time."""

    def __init__(self, engine: Engine, img_data_location: Path) -> None:
        self.engine = engine
        self.img_data_location = Path(img_data_location)

    def collect(self) -> Iterator[Metric]:
        recent: list[Run] | None
        try:
            recent = runs.list_runs(self.engine)
        except RunStoreUnavailableError as error:
            logger.warning("run store read failed during scrape: %s", error.detail)
            recent = None
        yield GaugeMetricFamily(
            "doodle_pipeline_store_up", "1 when the run store answered this scrape", value=int(recent is not None)
        )
        if recent is not None:
            yield from self._run_metrics(recent)
        yield from self._drawing_metrics()

    def _run_metrics(self, recent: list[Run]) -> Iterator[Metric]:
        latest = recent[0] if recent else None
        status = GaugeMetricFamily(
            "doodle_pipeline_stage_status", "1 for the latest run's status of each stage", labels=["stage", "status"]
        )
        duration = GaugeMetricFamily(
            "doodle_pipeline_stage_duration_seconds", "Stage durations of the latest run, once ended", labels=["stage"]
        )
        for stage in STAGES:
            current = latest.status(stage) if latest else None
            for value in Status:
                status.add_metric([stage, value.value], float(current is value))
            seconds = latest.seconds(stage) if latest else None
            if seconds is not None:
                duration.add_metric([stage], seconds)
        success = runs.last_success_end(recent)
        yield status
        yield duration
        yield GaugeMetricFamily(
            "doodle_pipeline_last_run_id",
            "run_id of the latest run, 0 before any",
            value=latest.run_id if latest else 0,
        )
        yield GaugeMetricFamily(
            "doodle_pipeline_last_success_timestamp_seconds",
            "End of the latest run whose seven stages all completed, 0 if none",
            value=success.timestamp() if success else 0,
        )
        yield CounterMetricFamily("doodle_pipeline_runs", "Pipeline runs in the run store", value=len(recent))

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
    logger.error("run store read failed path=%s", request.url.path, exc_info=error)
    return JSONResponse({"detail": str(error)}, status_code=503)


def _is_poll(request: Request, status_code: int) -> bool:
    return request.method == "GET" and request.url.path in POLLED_PATHS and status_code < 400


def create_dashboard_app(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, settings.log_dir / "dashboard_backend.log")
    engine = runs.connect(settings.database_url, connect_timeout_s=DB_CONNECT_TIMEOUT_S)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(engine, settings.img_data_location))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("dashboard started database=%s", engine.url.render_as_string(hide_password=True))
        yield
        engine.dispose()
        logger.info("dashboard stopped")

    app = FastAPI(title="doodle pipeline viewer", lifespan=lifespan, debug=False)
    app.state.registry = registry
    app.add_exception_handler(RunStoreUnavailableError, _store_unavailable)
    add_last_resort_handler(app)
    # Read-only answers: the original design's pipeline page reads them from another origin.
    app.add_middleware(CORSMiddleware, allow_origins=settings.viewer_cors_origins(), allow_methods=["GET"])

    @app.middleware("http")
    async def log_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            logger.info("request method=%s path=%s status=500", request.method, request.url.path)
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.log(
            logging.DEBUG if _is_poll(request, response.status_code) else logging.INFO,
            "request method=%s path=%s status=%d ms=%.1f",
            request.method,
            request.url.path,
            response.status_code,
            elapsed_ms,
        )
        return response

    # Plain `def` routes: they block on the database, so they run in the thread pool.
    @app.get("/pipeline_runs", response_model=list[RunPublic], responses={503: {"description": "run store down"}})
    def pipeline_runs() -> list[dict[str, object]]:
        """Every run, newest first, with all its columns."""
        recent = runs.list_runs(engine)
        logger.debug("runs listed rows=%d", len(recent))
        return [run.public() for run in recent]

    @app.get("/health")
    def health() -> JSONResponse:
        """200 only when the run store answers."""
        try:
            runs.check(engine)
        except RunStoreUnavailableError as error:
            logger.warning("run store health check failed: %s", error.detail)
            return JSONResponse({"status": "unavailable", "detail": "run store unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        # Not prometheus-client's ASGI app: that would run the DB reads on the event loop.
        return metrics_response(request, registry)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app
