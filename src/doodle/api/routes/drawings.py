"""POST /save-image/: store a labelled drawing for the retraining pipeline."""

import asyncio
import logging
from pathlib import Path

from fastapi import APIRouter, Depends

from doodle.api.batching import PredictionBatcher
from doodle.api.deps import BatcherDep, MetricsDep, SettingsDep, WaitingDep, require_token
from doodle.api.metrics import ApiMetrics, FeedbackSource
from doodle.api.model_client import ModelServerError, ModelServerUnavailableError
from doodle.api.routes.model import waiting_now
from doodle.api.schemas import DrawingCreate, DrawingPublic, error_responses
from doodle.categories import normalize_category
from doodle.config import Settings
from doodle.drawings import make_category_folder, save_drawing
from doodle.imaging import InvalidImageError, decode_image, encode_bitmap, normalize_drawing, to_png
from doodle.pipeline.ledger import committed_categories

logger = logging.getLogger(__name__)

router = APIRouter(tags=["drawings"])


def store_drawing(settings: Settings, category: str, png: bytes) -> Path:
    def pipeline_categories() -> set[str]:
        return committed_categories(settings.data_dir)

    make_category_folder(settings.img_data_location, category, pipeline_categories, settings.max_categories)
    return save_drawing(settings.img_data_location, category, png)


async def record_feedback(
    batcher: PredictionBatcher, metrics: ApiMetrics, bitmap_b64: str, category: str, source: FeedbackSource
) -> None:
    """Count whether `category` agrees with the served model's first guess for the stored drawing.

    The backend asks the model itself rather than trusting a prediction sent by the client: every
    client, old ones included, gets counted the same way, and against the version serving now.
    The drawing is already stored, so a model server failure only skips the count.
    """
    try:
        (answer,) = await batcher.predict([bitmap_b64])
    except (ModelServerUnavailableError, ModelServerError, InvalidImageError) as error:
        logger.warning("feedback not counted category=%s reason=%s", category, error)
        return
    outcome = "agreed" if answer["labels"][0] == category else "corrected"
    metrics.record_feedback(outcome, str(answer["model_version"]), source)


@router.post(
    "/save-image/",
    response_model=DrawingPublic,
    dependencies=[Depends(require_token)],
    responses=error_responses(400, 401, 413, 503, 507),
)
@router.post("/save-image", include_in_schema=False, dependencies=[Depends(require_token)])
async def save_image(
    body: DrawingCreate, settings: SettingsDep, metrics: MetricsDep, batcher: BatcherDep, waiting: WaitingDep
) -> DrawingPublic:
    """Normalise the drawing to Quick Draw's 28x28 form and store it as a PNG.

    The answer says how many drawings now wait for training.
    """
    metrics.save_requests.inc()
    with metrics.save_latency.time():
        category = normalize_category(body.category)
        bitmap = await asyncio.to_thread(lambda: normalize_drawing(decode_image(body.image)))
        path = await asyncio.to_thread(store_drawing, settings, category, to_png(bitmap))
        metrics.saved.inc()
        await record_feedback(batcher, metrics, encode_bitmap(bitmap), category, body.source)
        now_waiting = await waiting_now(waiting, settings)
    return DrawingPublic(category=category, filename=f"{category}/{path.name}", waiting=now_waiting)
