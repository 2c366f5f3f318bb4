"""The FastAPI backend: wiring only."""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from doodle.api.batching import PredictionBatcher
from doodle.api.errors import add_error_handlers
from doodle.api.metrics import ApiMetrics
from doodle.api.middleware import BodyLimitMiddleware, ErrorCountingMiddleware
from doodle.api.model_client import ModelClient, Predictor
from doodle.api.routes import drawings, health, model, predict
from doodle.api.served_model import ServedModel
from doodle.config import Settings, get_settings
from doodle.drawings import WaitingDrawings
from doodle.log import configure_logging

logger = logging.getLogger(__name__)


def create_app(settings: Settings, model_client: Predictor | None = None) -> FastAPI:
    """The backend. Without `model_client` it connects to MLFLOW_HOSTED_MODEL_URL; tests pass a fake.

    The app closes the model client when it stops.
    """
    configure_logging(settings.log_level, settings.log_dir / "app.log")
    metrics = ApiMetrics(CollectorRegistry())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = model_client or ModelClient(
            settings.mlflow_hosted_model_url,
            settings.predict_timeout_s,
            settings.connect_timeout_s,
            connections=settings.predict_max_in_flight + 2,  # the batches plus health and category probes
        )
        app.state.model_client = client
        app.state.served_model = ServedModel(client)
        app.state.batcher = PredictionBatcher(
            client, settings.predict_max_batch, settings.predict_max_in_flight, on_batch=metrics.batch_size.observe
        )
        logger.info("backend started model_server=%s", settings.mlflow_hosted_model_url)
        yield
        await client.aclose()
        logger.info("backend stopped")

    app = FastAPI(title="doodle backend", lifespan=lifespan, debug=False)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.waiting = WaitingDrawings(settings.img_data_location)
    app.state.draining = threading.Event()  # set while the server drains before it stops
    add_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(drawings.router)
    app.include_router(model.router)
    app.include_router(health.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(ErrorCountingMiddleware, metrics=metrics)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.backend_cors_origins(),
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Authorization"],
    )
    return app


def create_app_from_env() -> FastAPI:
    """Zero-argument factory for `doodle api`: uvicorn's workers each import the app by this name."""
    return create_app(get_settings())
