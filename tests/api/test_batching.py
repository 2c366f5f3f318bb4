"""Micro-batching: concurrent predictions share model-server calls and keep their own answers."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from doodle.api.batching import PredictionBatcher
from doodle.api.model_client import ModelServerUnavailableError
from doodle.imaging import InvalidImageError
from tests.utils.aio import run_async
from tests.utils.fakes import FakeModelClient
from tests.utils.images import b64, drawing

EMPTY = b64(np.zeros((28, 28), np.uint8))  # no ink: the model refuses it


def labelled_drawings(count: int) -> tuple[list[str], dict[str, str]]:
    """Distinct drawings, each with its own label from the fake model, so every answer can be traced."""
    images = [b64(drawing(seed)) for seed in range(count)]
    return images, {image: f"thing_{seed}" for seed, image in enumerate(images)}


def top_labels(answer: list[dict]) -> list[str]:
    return [item["labels"][0] for item in answer]


def run_together(batcher: PredictionBatcher, requests: list[list[str]]) -> list:
    async def main():
        return await asyncio.gather(*(batcher.predict(r) for r in requests), return_exceptions=True)

    return run_async(main())


def test_concurrent_requests_share_calls_and_each_gets_its_own_answer(api_client, fake_model):
    images, labels = labelled_drawings(48)
    fake_model.labels.update(labels)

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda image: api_client.post("/invocations/", json={"inputs": image}), images))

    assert [answer.status_code for answer in answers] == [200] * len(images)
    assert [answer.json()["predictions"][0] for answer in answers] == [labels[image] for image in images]
    calls = api_client.app.state.metrics.registry.get_sample_value("doodle_model_batch_size_count")
    assert calls == len(fake_model.calls) < len(images)  # some requests travelled together


def test_batches_grow_only_while_a_call_is_out():
    images, labels = labelled_drawings(9)
    model = FakeModelClient(labels=labels)
    batcher = PredictionBatcher(model, max_batch=4, max_in_flight=1)
    answers = run_together(batcher, [[image] for image in images])
    assert [top_labels(answer) for answer in answers] == [[labels[image]] for image in images]
    assert [len(call) for call in model.calls] == [1, 4, 4]  # the first goes at once, the rest queue


def test_one_rejected_image_fails_only_its_own_request():
    images, labels = labelled_drawings(4)
    batcher = PredictionBatcher(FakeModelClient(labels=labels), max_batch=8, max_in_flight=1)
    answers = run_together(batcher, [[images[0]], [images[1]], [EMPTY], [images[2], images[3]]])
    assert top_labels(answers[0]) == [labels[images[0]]]
    assert top_labels(answers[1]) == [labels[images[1]]]
    assert isinstance(answers[2], InvalidImageError)
    assert top_labels(answers[3]) == [labels[images[2]], labels[images[3]]]


def test_model_server_down_fails_every_waiting_request():
    model = FakeModelClient()
    model.down = True
    batcher = PredictionBatcher(model, max_batch=8, max_in_flight=1)
    answers = run_together(batcher, [[b64(drawing(seed))] for seed in range(3)])
    assert all(isinstance(answer, ModelServerUnavailableError) for answer in answers)
