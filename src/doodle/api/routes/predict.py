"""POST /invocations/: classify drawings through the model server."""

import asyncio
import math

from fastapi import APIRouter

from doodle.api.deps import BatcherDep, MetricsDep
from doodle.api.schemas import PredictRequest, PredictResponse, error_responses
from doodle.imaging import PIXELS, SIDE, InvalidImageError, decode_image, encode_bitmap

router = APIRouter(tags=["predict"])

# The design's payload, base64 of 784 raw bytes, decodes in microseconds: less than a hop to a worker
# thread. Any image (PNG or JPEG, up to 4096 px a side) goes to a thread: it can take tens of milliseconds.
RAW_BITMAP_CHARS = 4 * math.ceil(PIXELS / 3)


def prepare(image: str) -> str:
    """Validate one payload here, so a bad image fails alone; the model normalises it.

    28x28 images travel as their 784 raw bytes, larger ones unchanged.
    """
    ink = decode_image(image)
    if not ink.any():
        raise InvalidImageError("drawing is empty: no ink found")
    return encode_bitmap(ink) if ink.shape == (SIDE, SIDE) else image


def prepare_all(images: list[str]) -> list[str]:
    return [prepare(image) for image in images]


@router.post(
    "/invocations/",
    response_model=PredictResponse | list[PredictResponse],
    responses=error_responses(400, 413, 502, 503),
)
@router.post("/invocations", include_in_schema=False)
async def predict(
    body: PredictRequest, batcher: BatcherDep, metrics: MetricsDep
) -> PredictResponse | list[PredictResponse]:
    """Top labels for one image, or a list of results for a list of images."""
    metrics.prediction_requests.inc()
    with metrics.prediction_latency.time():
        images = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        if all(len(image) == RAW_BITMAP_CHARS for image in images):
            prepared = prepare_all(images)
        else:
            prepared = await asyncio.to_thread(prepare_all, images)  # keeps the event loop answering
        ranked = await batcher.predict(prepared)
        results = []
        for item in ranked:
            version = str(item["model_version"])
            metrics.record_prediction(item["labels"][0], item["probabilities"][0], version)
            results.append(
                PredictResponse(predictions=item["labels"], probabilities=item["probabilities"], model_version=version)
            )
    return results[0] if isinstance(body.inputs, str) else results
