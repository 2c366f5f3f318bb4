"""Serve the drawing UI (static files) and `/config.js`, which tells the page where the backend is."""

import json
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from doodle.config import Settings
from doodle.log import configure_logging

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def create_ui_app(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, settings.log_dir / "ui.log")
    app = FastAPI(title="doodle UI", docs_url=None, redoc_url=None, openapi_url=None)
    config_js = f"window.DOODLE_CONFIG = {json.dumps({'backendUrl': settings.ui_backend_url.rstrip('/')})};\n"

    @app.get("/config.js", include_in_schema=False)
    def config() -> Response:
        return Response(config_js, media_type="application/javascript", headers={"Cache-Control": "no-store"})

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    logger.info("ui ready backend=%s", settings.ui_backend_url)
    return app
