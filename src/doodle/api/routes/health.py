"""GET /health, GET /categories and GET /metrics."""

import base64

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from doodle.api.deps import MetricsDep, ModelClientDep
from doodle.api.schemas import CategoriesPublic, HealthPublic
from doodle.imaging import PIXELS
from doodle.web import metrics_response

router = APIRouter(tags=["health"])

# A single dot: any model answers it, listing every label when top_k is 0.
_PROBE = base64.b64encode(bytes(PIXELS // 2) + b"\xff" + bytes(PIXELS // 2 - 1)).decode()


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def health(model: ModelClientDep) -> HealthPublic | JSONResponse:
    """200 only when the model server answers."""
    if await model.healthy():
        return HealthPublic(status="ok", model_server="up")
    return JSONResponse(HealthPublic(status="unavailable", model_server="down").model_dump(), status_code=503)


@router.get("/categories", response_model=CategoriesPublic)
async def categories(model: ModelClientDep) -> CategoriesPublic:
    """The labels of the model being served, sorted."""
    (answer,) = await model.predict([_PROBE], top_k=0)
    return CategoriesPublic(categories=sorted(answer["labels"]), model_version=str(answer["model_version"]))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, api_metrics: MetricsDep) -> Response:
    """Prometheus exposition, answered at /metrics itself (a mounted app would redirect to /metrics/)."""
    return metrics_response(request, api_metrics.registry)
