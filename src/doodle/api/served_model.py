"""What the model server serves: version, categories and what that version added, probed and kept briefly."""

import asyncio
import base64
import time
from dataclasses import dataclass

from doodle.api.model_client import Predictor
from doodle.imaging import PIXELS

# A single dot: any model answers it, listing every label when top_k is 0.
PROBE = base64.b64encode(bytes(PIXELS // 2) + b"\xff" + bytes(PIXELS // 2 - 1)).decode()


@dataclass(frozen=True)
class ModelInfo:
    version: str
    categories: list[str]
    added_categories: list[str]  # those the version it was trained from did not have
    added_on: str | None  # ISO date the version was trained


class ServedModel:
    """Asks the model server at most once per `max_age_s`, however many pages poll: concurrent callers
    share one probe."""

    def __init__(self, client: Predictor, max_age_s: float = 2.0) -> None:
        self.client = client
        self.max_age_s = max_age_s
        self._info: ModelInfo | None = None
        self._probed_at = 0.0
        self._lock = asyncio.Lock()

    async def info(self) -> ModelInfo:
        async with self._lock:
            if self._info is None or time.monotonic() - self._probed_at > self.max_age_s:
                (answer,) = await self.client.predict([PROBE], top_k=0, model_info=True)
                self._info = ModelInfo(
                    version=str(answer["model_version"]),
                    categories=sorted(answer["labels"]),
                    # Versions registered before model_info existed ignore it and name nothing.
                    added_categories=list(answer.get("added_categories", [])),
                    added_on=answer.get("added_on"),
                )
                self._probed_at = time.monotonic()
            return self._info
