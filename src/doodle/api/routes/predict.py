"""POST /invocations/: classify drawings through the model server."""

from fastapi import APIRouter

from doodle.api.deps import MetricsDep, ModelClientDep
from doodle.api.schemas import PredictRequest, PredictResponse
from doodle.imaging import decode_image, encode_bitmap, normalize_drawing

router = APIRouter(tags=["predict"])


def prepare(image: str) -> str:
    """Validate one payload and normalise it to the compact 784-byte form."""
    return encode_bitmap(normalize_drawing(decode_image(image)))


@router.post("/invocations/", response_model=PredictResponse | list[PredictResponse])
@router.post("/invocations", include_in_schema=False)
async def predict(body: PredictRequest, model: ModelClientDep, metrics: MetricsDep):
    """Top labels for one image, or a list of results for a list of images."""
    metrics.prediction_requests.inc()
    with metrics.prediction_latency.time():
        images = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        ranked = await model.predict([prepare(image) for image in images])
        results = []
        for item in ranked:
            metrics.record_prediction(item["labels"][0], item["probabilities"][0], str(item["model_version"]))
            results.append(
                PredictResponse(
                    predictions=item["labels"],
                    probabilities=item["probabilities"],
                    model_version=str(item["model_version"]),
                )
            )
    return results[0] if isinstance(body.inputs, str) else results
