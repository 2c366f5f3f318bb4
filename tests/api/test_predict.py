"""Predictions through the real backend and a real `mlflow models serve` process."""

import base64
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from doodle.api.app import create_app
from doodle.config import settings_under
from tests.utils.images import b64
from tests.utils.network import free_port
from tests.utils.services import start_model_server

pytestmark = pytest.mark.e2e


def test_predict_returns_design_contract_for_real_drawings(client, quickdraw_test):
    rng = np.random.default_rng(1)
    picks = rng.choice(len(quickdraw_test), size=60, replace=False)
    correct = 0
    for index in picks:
        answer = client.post("/invocations/", json={"inputs": b64(quickdraw_test.images[index])})
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"predictions", "probabilities", "model_version"}
        assert body["model_version"] == "1"
        assert body["probabilities"] == sorted(body["probabilities"], reverse=True)
        correct += body["predictions"][0] == quickdraw_test.categories[quickdraw_test.labels[index]]
    assert correct / len(picks) >= 0.9


def test_predict_list_input_gets_list_of_results(client, quickdraw_test):
    images = quickdraw_test.images[:5]
    answer = client.post("/invocations", json={"inputs": [b64(image) for image in images]})
    assert answer.status_code == 200
    results = answer.json()
    assert len(results) == 5
    single = client.post("/invocations/", json={"inputs": b64(images[2])}).json()
    assert results[2] == single


def test_predict_accepts_large_png_of_small_offcentre_drawing(client, quickdraw_test):
    """A canvas-sized PNG with a small drawing in a corner is normalised before classifying."""
    from PIL import Image

    from tests.utils.images import png_b64

    index = int(np.flatnonzero(quickdraw_test.labels == quickdraw_test.categories.index("star"))[0])
    small = Image.fromarray(quickdraw_test.images[index].reshape(28, 28)).resize((56, 56))
    canvas = np.zeros((400, 400), np.uint8)
    canvas[20:76, 300:356] = np.asarray(small)
    answer = client.post("/invocations/", json={"inputs": "data:image/png;base64," + png_b64(canvas)})
    assert answer.status_code == 200
    assert "star" in answer.json()["predictions"][:3]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": "%%%not-base64%%%"}, "not valid base64"),
        ({"inputs": base64.b64encode(bytes(783)).decode()}, "expected 784 raw bytes"),
        ({"inputs": base64.b64encode(b"\x89PNG\r\n" + bytes(1000)).decode()}, "neither 784 raw bytes nor a PNG"),
        ({"inputs": base64.b64encode(bytes(784)).decode()}, "drawing is empty"),
        ({"inputs": ""}, "image is empty"),
    ],
)
def test_predict_rejects_bad_input_with_clear_400(client, payload, message):
    answer = client.post("/invocations/", json=payload)
    assert answer.status_code == 400
    assert message in answer.json()["detail"]
    assert "Traceback" not in answer.text


def test_predict_rejects_malformed_body(client):
    assert client.post("/invocations/", json={"image": "x"}).status_code == 422
    assert client.post("/invocations/", json={"inputs": []}).status_code == 422


def test_health_and_categories_reflect_served_model(client, quickdraw_dir):
    assert client.get("/health").json() == {"status": "ok", "model_server": "up"}
    body = client.get("/categories").json()
    assert body["categories"] == sorted(p.stem for p in quickdraw_dir.glob("*.npy"))


def test_predict_answers_503_fast_when_model_server_down_then_recovers(served_store, tmp_path, quickdraw_test):
    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    payload = {"inputs": b64(quickdraw_test.images[0])}
    from doodle import stack

    with TestClient(create_app(settings_under(tmp_path, mlflow_hosted_model_url=url))) as backend:
        started = time.perf_counter()
        down = backend.post("/invocations/", json=payload)
        assert down.status_code == 503
        assert time.perf_counter() - started < 1.0
        assert "unavailable" in down.json()["detail"]
        assert backend.get("/health").status_code == 503

        service = start_model_server(served_store, port)
        try:
            assert backend.post("/invocations/", json=payload).status_code == 200
            assert backend.get("/health").status_code == 200
            stack.stop([service])
            assert backend.post("/invocations/", json=payload).status_code == 503
        finally:
            stack.stop([service])
