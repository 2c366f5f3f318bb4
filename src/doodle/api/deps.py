"""Shared route dependencies with readable names."""

from typing import Annotated

from fastapi import Depends, Request

from doodle.api.batching import PredictionBatcher
from doodle.api.metrics import ApiMetrics
from doodle.api.model_client import ModelClient
from doodle.config import Settings


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_model_client(request: Request) -> ModelClient:
    return request.app.state.model_client


async def get_batcher(request: Request) -> PredictionBatcher:
    return request.app.state.batcher


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ModelClientDep = Annotated[ModelClient, Depends(get_model_client)]
BatcherDep = Annotated[PredictionBatcher, Depends(get_batcher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
