"""Shared route dependencies with readable names."""

from typing import Annotated

from fastapi import Depends, Request

from doodle.api.metrics import ApiMetrics
from doodle.api.model_client import ModelClient
from doodle.config import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_model_client(request: Request) -> ModelClient:
    return request.app.state.model_client


def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ModelClientDep = Annotated[ModelClient, Depends(get_model_client)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
