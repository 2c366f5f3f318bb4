"""POST /save-image/: store a labelled drawing for the retraining pipeline."""

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends

from doodle.api.deps import MetricsDep, SettingsDep, require_token
from doodle.api.schemas import DrawingCreate, DrawingPublic, error_responses
from doodle.categories import normalize_category
from doodle.config import Settings
from doodle.drawings import make_category_folder, save_drawing
from doodle.imaging import decode_image, normalize_drawing, to_png
from doodle.pipeline.ledger import committed_categories

router = APIRouter(tags=["drawings"])


def store_drawing(settings: Settings, category: str, png: bytes) -> Path:
    def pipeline_categories() -> set[str]:
        return committed_categories(settings.data_dir)

    make_category_folder(settings.img_data_location, category, pipeline_categories, settings.max_categories)
    return save_drawing(settings.img_data_location, category, png)


@router.post(
    "/save-image/",
    response_model=DrawingPublic,
    dependencies=[Depends(require_token)],
    responses=error_responses(400, 401, 413, 503, 507),
)
@router.post("/save-image", include_in_schema=False, dependencies=[Depends(require_token)])
async def save_image(body: DrawingCreate, settings: SettingsDep, metrics: MetricsDep) -> DrawingPublic:
    """Normalise the drawing to Quick Draw's 28x28 form and store it as a PNG."""
    metrics.save_requests.inc()
    with metrics.save_latency.time():
        category = normalize_category(body.category)
        png = await asyncio.to_thread(lambda: to_png(normalize_drawing(decode_image(body.image))))
        path = await asyncio.to_thread(store_drawing, settings, category, png)
        metrics.saved.inc()
    return DrawingPublic(category=category, filename=f"{category}/{path.name}")
