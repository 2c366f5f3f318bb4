"""Shared route dependencies with readable names."""

import secrets
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from doodle.api.batching import PredictionBatcher
from doodle.api.metrics import ApiMetrics
from doodle.api.model_client import Predictor
from doodle.api.served_model import ServedModel
from doodle.config import Settings
from doodle.drawings import WaitingDrawings

# app.state is untyped; create_app puts exactly these there.


async def get_settings_dep(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def get_model_client(request: Request) -> Predictor:
    return cast(Predictor, request.app.state.model_client)


async def get_batcher(request: Request) -> PredictionBatcher:
    return cast(PredictionBatcher, request.app.state.batcher)


async def get_metrics(request: Request) -> ApiMetrics:
    return cast(ApiMetrics, request.app.state.metrics)


async def get_served_model(request: Request) -> ServedModel:
    return cast(ServedModel, request.app.state.served_model)


async def get_waiting(request: Request) -> WaitingDrawings:
    return cast(WaitingDrawings, request.app.state.waiting)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ModelClientDep = Annotated[Predictor, Depends(get_model_client)]
BatcherDep = Annotated[PredictionBatcher, Depends(get_batcher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
ServedModelDep = Annotated[ServedModel, Depends(get_served_model)]
WaitingDep = Annotated[WaitingDrawings, Depends(get_waiting)]


_bearer = HTTPBearer(auto_error=False, description="needed only when the server sets API_TOKEN")


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """With API_TOKEN set, the request must carry `Authorization: Bearer <API_TOKEN>`."""
    token = request.app.state.settings.api_token
    if token is None or not token.get_secret_value():  # unset or empty: open, for local use
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})
