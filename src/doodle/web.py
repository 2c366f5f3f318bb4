"""What the doodle web apps share: the last-resort error answer and the /metrics exposition."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)


async def _unhandled(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error path=%s", request.url.path, exc_info=error)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def add_last_resort_handler(app: FastAPI) -> None:
    """Any unhandled error: its traceback goes to the log, the client gets `500 {"detail": "internal error"}`."""
    app.add_exception_handler(Exception, _unhandled)


def metrics_response(request: Request, registry: CollectorRegistry) -> Response:
    """Prometheus exposition of `registry`, in the format the scraper asks for."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=content_type)
