"""POST /save-image/: store a labelled drawing for the retraining pipeline."""

import asyncio

from fastapi import APIRouter, Depends

from doodle.api.deps import MetricsDep, SettingsDep, require_token
from doodle.api.schemas import DrawingCreate, DrawingPublic
from doodle.categories import normalize_category
from doodle.drawings import check_category_room, save_drawing
from doodle.imaging import decode_image, normalize_drawing, to_png

router = APIRouter(tags=["drawings"])


@router.post(
    "/save-image/",
    response_model=DrawingPublic,
    dependencies=[Depends(require_token)],
    responses={401: {"description": "API_TOKEN is set and the bearer token is missing or wrong"}},
)
@router.post("/save-image", include_in_schema=False, dependencies=[Depends(require_token)])
async def save_image(body: DrawingCreate, settings: SettingsDep, metrics: MetricsDep) -> DrawingPublic:
    """Normalise the drawing to Quick Draw's 28x28 form and store it as a PNG."""
    metrics.save_requests.inc()
    with metrics.save_latency.time():
        category = normalize_category(body.category)
        png = to_png(normalize_drawing(decode_image(body.image)))
        known = {path.stem for path in settings.data_dir.rglob("*.npy")}  # categories the pipeline holds
        await asyncio.to_thread(
            check_category_room, settings.img_data_location, category, known, settings.max_categories
        )
        path = await asyncio.to_thread(save_drawing, settings.img_data_location, category, png)
        metrics.saved.inc()
    return DrawingPublic(category=category, filename=f"{category}/{path.name}")
