"""Adaptive micro-batching: concurrent predictions share model-server calls.

A request that finds a free call slot goes out at once, so a lone user waits
for nothing. While `max_in_flight` calls are out, new images queue; each call
that returns sends what has queued (up to `max_batch` images) as one call. The
busier the backend, the bigger the batches, with no fixed waiting window.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from doodle.api.model_client import Prediction, Predictor
from doodle.imaging import InvalidImageError

logger = logging.getLogger(__name__)


# An image waiting for its call, and where its answer goes.
Pending = tuple[str, asyncio.Future[Prediction]]


class PredictionBatcher:
    def __init__(
        self,
        client: Predictor,
        max_batch: int,
        max_in_flight: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.on_batch = on_batch  # called with each call's image count
        self._queue: deque[Pending] = deque()
        self._in_flight = 0
        self._calls: set[asyncio.Task[None]] = set()

    async def predict(self, images: list[str]) -> list[Prediction]:
        """Ranked labels per image, in order; raises what the model client raises."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Prediction]] = [loop.create_future() for _ in images]
        self._queue.extend(zip(images, futures, strict=True))
        self._dispatch()
        answers = []
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            answers.append(result)
        return answers

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            size = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            self._in_flight += 1
            call = asyncio.create_task(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[Pending]) -> None:
        try:
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                results = await self.client.predict([image for image, _ in batch])
            except InvalidImageError:
                if len(batch) == 1:
                    raise
                # The model rejected one of the images: ask for each alone so only that request fails.
                await asyncio.gather(*(self._call_alone(item) for item in batch))
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # done: its request was cancelled
                    future.set_result(result)
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _call_alone(self, item: Pending) -> None:
        image, future = item
        try:
            (result,) = await self.client.predict([image])
        except Exception as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(result)
