"""GET /health, GET /categories and GET /metrics."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from doodle.api.deps import MetricsDep, ModelClientDep, ServedModelDep
from doodle.api.schemas import CategoriesPublic, HealthPublic
from doodle.web import metrics_response

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def health(request: Request, model: ModelClientDep) -> HealthPublic | JSONResponse:
    """200 only when the model server answers and this backend is not draining before it stops."""
    up = await model.healthy()
    status = "draining" if request.app.state.draining.is_set() else "ok" if up else "unavailable"
    answer = HealthPublic(status=status, model_server="up" if up else "down")
    return answer if status == "ok" else JSONResponse(answer.model_dump(), status_code=503)


@router.get("/categories", response_model=CategoriesPublic)
async def categories(served: ServedModelDep) -> CategoriesPublic:
    """The labels of the model being served, sorted."""
    info = await served.info()
    return CategoriesPublic(categories=info.categories, model_version=info.version)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, api_metrics: MetricsDep) -> Response:
    """Prometheus exposition, answered at /metrics itself (a mounted app would redirect to /metrics/)."""
    return metrics_response(request, api_metrics.registry)
