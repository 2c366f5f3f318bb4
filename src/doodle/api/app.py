"""The FastAPI backend: wiring only."""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from doodle.api.batching import PredictionBatcher
from doodle.api.errors import add_error_handlers
from doodle.api.metrics import ApiMetrics
from doodle.api.model_client import ModelClient
from doodle.api.routes import drawings, health, predict
from doodle.config import Settings, get_settings
from doodle.log import configure_logging

logger = logging.getLogger(__name__)


class ErrorCountingMiddleware:
    """Counts every answer with status >= 400 in api_errors_total{endpoint}."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_and_count(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self._count(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception:
            self._count(scope)  # answered 500 by the last-resort handler
            raise

    def _count(self, scope) -> None:
        route = scope.get("route")
        endpoint = route.path.rstrip("/") or "/" if route is not None else "unmatched"
        self.metrics.errors.labels(endpoint=endpoint).inc()


def create_app(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, settings.log_dir / "app.log")
    metrics = ApiMetrics(CollectorRegistry())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = ModelClient(
            settings.mlflow_hosted_model_url,
            settings.predict_timeout_s,
            settings.connect_timeout_s,
            connections=settings.predict_max_in_flight + 2,  # the batches plus health and category probes
        )
        app.state.model_client = client
        app.state.batcher = PredictionBatcher(
            client, settings.predict_max_batch, settings.predict_max_in_flight, on_batch=metrics.batch_size.observe
        )
        logger.info("backend started model_server=%s", settings.mlflow_hosted_model_url)
        yield
        await client.aclose()
        logger.info("backend stopped")

    app = FastAPI(
        title="doodle backend", lifespan=lifespan, debug=False, max_body_size=settings.max_request_bytes
    )  # 413 above it
    app.state.settings = settings
    app.state.metrics = metrics
    add_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(drawings.router)
    app.include_router(health.router)
    app.add_middleware(ErrorCountingMiddleware, metrics=metrics)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Authorization"],
    )
    return app


def create_app_from_env() -> FastAPI:
    """Zero-argument factory for uvicorn."""
    return create_app(get_settings())
