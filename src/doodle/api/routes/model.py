"""GET /model: what the served model knows, and what waits to be learned."""

import asyncio

from fastapi import APIRouter

from doodle.api.deps import ServedModelDep, SettingsDep, WaitingDep
from doodle.api.schemas import ModelPublic, WaitingPublic, error_responses
from doodle.config import Settings
from doodle.drawings import WaitingDrawings

router = APIRouter(tags=["model"])


async def waiting_now(waiting: WaitingDrawings, settings: Settings) -> WaitingPublic:
    counts = await asyncio.to_thread(waiting.counts)
    return WaitingPublic(total=sum(counts.values()), categories=counts, training_starts_at=settings.min_new_images)


@router.get("/model", response_model=ModelPublic, responses=error_responses(502, 503))
async def model(served: ServedModelDep, waiting: WaitingDep, settings: SettingsDep) -> ModelPublic:
    """The served version, its categories and those it added, and the drawings waiting for training.

    The drawing page polls this alone; 503 means the model server is unavailable.
    """
    info = await served.info()
    return ModelPublic(
        version=info.version,
        categories=info.categories,
        added_categories=info.added_categories,
        added_on=info.added_on,
        waiting=await waiting_now(waiting, settings),
    )
