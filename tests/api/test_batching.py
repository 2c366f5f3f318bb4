"""Micro-batching: concurrent predictions share model-server calls and keep their own answers."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from doodle.api.batching import PredictionBatcher
from doodle.api.model_client import ModelServerUnavailableError
from doodle.imaging import InvalidImageError
from tests.utils.aio import run_async
from tests.utils.images import b64


def metric_value(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.e2e
def test_concurrent_requests_share_calls_and_each_gets_its_own_answer(client, quickdraw_test):
    rng = np.random.default_rng(7)
    images = [b64(quickdraw_test.images[i]) for i in rng.choice(len(quickdraw_test), 48, replace=False)]
    alone = [client.post("/invocations/", json={"inputs": image}).json() for image in images]
    calls_before = metric_value(client.get("/metrics").text, "doodle_model_batch_size_count")

    with ThreadPoolExecutor(max_workers=24) as pool:
        together = list(pool.map(lambda image: client.post("/invocations/", json={"inputs": image}), images))

    assert [answer.status_code for answer in together] == [200] * len(images)
    for answer, expected in zip(together, alone, strict=True):
        body = answer.json()
        assert body["predictions"] == expected["predictions"]
        assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)  # batched float sums
    calls = metric_value(client.get("/metrics").text, "doodle_model_batch_size_count") - calls_before
    assert calls < len(images)  # some requests travelled together


class RecordingModel:
    """Stands in for the model server's answer rules: rejects images named 'bad', echoes the rest."""

    def __init__(self, down: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.down = down

    async def predict(self, images: list[str], top_k=None) -> list[dict]:
        self.calls.append(list(images))
        await asyncio.sleep(0.01)
        if self.down:
            raise ModelServerUnavailableError("model server is unavailable")
        if "bad" in images:
            raise InvalidImageError("drawing is empty: ink too faint")
        return [{"labels": [image]} for image in images]


def run_together(batcher: PredictionBatcher, requests: list[list[str]]) -> list:
    async def main():
        return await asyncio.gather(*(batcher.predict(r) for r in requests), return_exceptions=True)

    return run_async(main())


def test_batches_grow_only_while_a_call_is_out():
    model = RecordingModel()
    batcher = PredictionBatcher(model, max_batch=4, max_in_flight=1)
    answers = run_together(batcher, [[f"img{i}"] for i in range(9)])
    assert answers == [[{"labels": [f"img{i}"]}] for i in range(9)]
    assert [len(call) for call in model.calls] == [1, 4, 4]  # the first goes at once, the rest queue


def test_one_rejected_image_fails_only_its_own_request():
    model = RecordingModel()
    batcher = PredictionBatcher(model, max_batch=8, max_in_flight=1)
    answers = run_together(batcher, [["first"], ["a"], ["bad"], ["b", "c"]])
    assert answers[0] == [{"labels": ["first"]}]
    assert answers[1] == [{"labels": ["a"]}]
    assert isinstance(answers[2], InvalidImageError)
    assert answers[3] == [{"labels": ["b"]}, {"labels": ["c"]}]


def test_model_server_down_fails_every_waiting_request():
    batcher = PredictionBatcher(RecordingModel(down=True), max_batch=8, max_in_flight=1)
    answers = run_together(batcher, [["a"], ["b"], ["c"]])
    assert all(isinstance(answer, ModelServerUnavailableError) for answer in answers)
