"""Domain errors mapped to HTTP answers, in one place. Clients never see a traceback."""

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from doodle.api.model_client import ModelServerError, ModelServerUnavailableError
from doodle.categories import InvalidCategoryError
from doodle.drawings import StorageError, StorageFullError, TooManyCategoriesError
from doodle.imaging import InvalidImageError
from doodle.web import add_last_resort_handler

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[Exception], int] = {
    InvalidImageError: 400,
    InvalidCategoryError: 400,
    TooManyCategoriesError: 400,
    StorageFullError: 507,
    StorageError: 503,
    ModelServerUnavailableError: 503,
    ModelServerError: 502,
}


def _domain_handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, error: Exception) -> JSONResponse:
        level = logging.WARNING if status < 500 else logging.ERROR
        logger.log(level, "request failed path=%s status=%d reason=%s", request.url.path, status, error)
        return JSONResponse({"detail": str(error)}, status_code=status)

    return handle


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    """422 listing what is wrong, without echoing the input (it may not even be encodable: NaN, surrogates).

    Registered for RequestValidationError only; Starlette types every handler's error as Exception.
    """
    logger.warning("request rejected path=%s status=422", request.url.path)
    errors = cast(RequestValidationError, error).errors()
    problems = [{key: value for key, value in item.items() if key in ("type", "loc", "msg")} for item in errors]
    return JSONResponse({"detail": jsonable_encoder(problems)}, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for error_type, status in STATUS_BY_ERROR.items():
        app.add_exception_handler(error_type, _domain_handler(status))
    add_last_resort_handler(app)
