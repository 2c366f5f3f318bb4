"""Stand-ins for the services the backend talks to, for unit tests."""

import asyncio
from typing import Any

from doodle.api.model_client import ModelServerUnavailableError
from doodle.imaging import decode_image, normalize_drawing

CATEGORIES = ("cat", "dog", "house", "star")
DEFAULT_TOP_K = 5  # as the served pyfunc model


class FakeModelClient:
    """Answers like `doodle.api.model_client.ModelClient` in front of the served model, and records each call.

    It refuses what the model refuses (InvalidImageError, the model server's 400: images that do
    not decode or hold no ink), ranks `categories` with the image's entry in `labels` first (else
    the first category), and while `down` fails as an unreachable model server does.
    """

    def __init__(
        self,
        categories: tuple[str, ...] = CATEGORIES,
        labels: dict[str, str] | None = None,
        model_version: str = "1",
        delay_s: float = 0.01,
    ) -> None:
        self.categories = list(categories)
        self.labels = dict(labels or {})
        self.model_version = model_version
        self.delay_s = delay_s  # each call takes this long, so concurrent requests can queue behind it
        self.added_categories: list[str] = []
        self.added_on: str | None = None
        self.down = False
        self.calls: list[list[str]] = []

    async def predict(
        self, images: list[str], top_k: int | None = None, model_info: bool = False
    ) -> list[dict[str, Any]]:
        self.calls.append(list(images))
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise ModelServerUnavailableError("model server is unavailable")
        for image in images:
            normalize_drawing(decode_image(image))
        info = {"added_categories": self.added_categories, "added_on": self.added_on} if model_info else {}
        return [{**self.answer(image, top_k), **info} for image in images]

    def answer(self, image: str, top_k: int | None = None) -> dict[str, Any]:
        """The ranking the model gives `image`: every category when `top_k` is 0."""
        first = self.labels.get(image, self.categories[0])
        ranked = [first, *(category for category in self.categories if category != first)]
        count = len(ranked) if top_k == 0 else min(top_k or DEFAULT_TOP_K, len(ranked))
        weights = [0.5**rank for rank in range(len(ranked))]
        return {
            "labels": ranked[:count],
            "probabilities": [round(weight / sum(weights), 6) for weight in weights[:count]],
            "model_version": self.model_version,
        }

    async def healthy(self) -> bool:
        return not self.down

    async def aclose(self) -> None:
        pass
