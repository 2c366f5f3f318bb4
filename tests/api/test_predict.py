"""POST /invocations/, GET /health and GET /categories: the backend's rules against a fake model server,
and the design's contract end to end against a real `mlflow models serve` process (e2e)."""

import asyncio
import base64
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from doodle.api.app import create_app
from doodle.api.routes import predict as predict_route
from doodle.config import settings_under
from doodle.stack.supervisor import stop
from tests.utils.images import b64, drawing, png_b64
from tests.utils.network import free_port
from tests.utils.services import start_model_server


def test_predict_returns_the_models_ranking_in_the_design_contract(api_client, fake_model):
    image = b64(drawing())
    fake_model.labels[image] = "star"

    answer = api_client.post("/invocations/", json={"inputs": image})

    assert answer.status_code == 200
    expected = fake_model.answer(image)
    assert answer.json() == {
        "predictions": expected["labels"],
        "probabilities": expected["probabilities"],
        "model_version": expected["model_version"],
    }
    assert answer.json()["predictions"][0] == "star"


def test_predict_list_input_gets_one_result_per_image_in_order(api_client, fake_model):
    images = [b64(drawing(seed)) for seed in range(5)]
    for image, category in zip(images, ["dog", "star", "cat", "house", "dog"], strict=True):
        fake_model.labels[image] = category

    answer = api_client.post("/invocations", json={"inputs": images})

    assert answer.status_code == 200
    results = answer.json()
    assert [result["predictions"][0] for result in results] == ["dog", "star", "cat", "house", "dog"]
    assert results[2] == api_client.post("/invocations/", json={"inputs": images[2]}).json()


def test_predict_sends_28x28_images_as_raw_bytes_and_larger_ones_unchanged(api_client, fake_model):
    small_png = png_b64(drawing())
    large_png = png_b64(np.kron(drawing(), np.ones((4, 4), np.uint8)))  # 112x112

    assert api_client.post("/invocations/", json={"inputs": [small_png, large_png]}).status_code == 200

    assert fake_model.calls == [[b64(drawing()), large_png]]


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_predict_decodes_images_outside_the_event_loop(api_client, monkeypatch):
    """Images can take milliseconds to decode: meanwhile the backend keeps answering other requests."""
    decoded_on_loop = []
    decode = predict_route.decode_image

    def recording_decode(image: str) -> np.ndarray:
        decoded_on_loop.append(on_event_loop())
        return decode(image)

    monkeypatch.setattr(predict_route, "decode_image", recording_decode)
    canvas = np.kron(drawing(), np.ones((20, 20), np.uint8))  # 560x560, like the drawing page's canvas

    assert api_client.post("/invocations/", json={"inputs": png_b64(canvas)}).status_code == 200
    assert api_client.post("/invocations/", json={"inputs": b64(drawing())}).status_code == 200

    assert decoded_on_loop == [False, True]  # the design's 784 raw bytes decode in place, in microseconds


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": "%%%not-base64%%%"}, "not valid base64"),
        ({"inputs": base64.b64encode(bytes(783)).decode()}, "expected 784 raw bytes"),
        ({"inputs": base64.b64encode(b"\x89PNG\r\n" + bytes(1000)).decode()}, "neither 784 raw bytes nor a PNG"),
        ({"inputs": base64.b64encode(bytes(784)).decode()}, "drawing is empty"),
        ({"inputs": ""}, "image is empty"),
        ({"inputs": [b64(drawing()), ""]}, "image is empty"),
    ],
)
def test_predict_rejects_bad_input_with_clear_400_without_asking_the_model(api_client, fake_model, payload, message):
    answer = api_client.post("/invocations/", json=payload)
    assert answer.status_code == 400
    assert message in answer.json()["detail"]
    assert "Traceback" not in answer.text
    assert fake_model.calls == []


def test_predict_passes_on_the_models_refusal_as_400(api_client):
    """A faint line across a large canvas passes the backend's check but averages away to nothing at 28x28."""
    canvas = np.zeros((400, 400), np.uint8)
    canvas[200, :] = 1
    answer = api_client.post("/invocations/", json={"inputs": png_b64(canvas)})
    assert answer.status_code == 400
    assert "too faint" in answer.json()["detail"]


def test_predict_rejects_malformed_body(api_client):
    assert api_client.post("/invocations/", json={"image": "x"}).status_code == 422
    assert api_client.post("/invocations/", json={"inputs": []}).status_code == 422


def test_health_and_categories_report_the_served_model(api_client, fake_model):
    assert api_client.get("/health").json() == {"status": "ok", "model_server": "up"}
    assert api_client.get("/categories").json() == {
        "categories": sorted(fake_model.categories),
        "model_version": fake_model.model_version,
    }


def test_predict_and_health_answer_503_while_the_model_server_is_down_then_recover(api_client, fake_model):
    payload = {"inputs": b64(drawing())}
    fake_model.down = True

    down = api_client.post("/invocations/", json=payload)
    assert down.status_code == 503
    assert "unavailable" in down.json()["detail"]
    health = api_client.get("/health")
    assert (health.status_code, health.json()) == (503, {"status": "unavailable", "model_server": "down"})

    fake_model.down = False
    assert api_client.post("/invocations/", json=payload).status_code == 200
    assert api_client.get("/health").status_code == 200


# --- end to end, against the real model server ------------------------------------------------------------------


@pytest.mark.e2e
def test_predict_classifies_real_drawings_in_the_design_contract(client, quickdraw_test):
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


@pytest.mark.e2e
def test_predict_list_input_gets_list_of_results(client, quickdraw_test):
    images = quickdraw_test.images[:5]
    answer = client.post("/invocations", json={"inputs": [b64(image) for image in images]})
    assert answer.status_code == 200
    results = answer.json()
    assert len(results) == 5
    single = client.post("/invocations/", json={"inputs": b64(images[2])}).json()
    assert results[2] == single


@pytest.mark.e2e
def test_predict_accepts_large_png_of_small_offcentre_drawing(client, quickdraw_test):
    """A canvas-sized PNG with a small drawing in a corner is normalised before classifying."""
    index = int(np.flatnonzero(quickdraw_test.labels == quickdraw_test.categories.index("star"))[0])
    small = Image.fromarray(quickdraw_test.images[index].reshape(28, 28)).resize((56, 56))
    canvas = np.zeros((400, 400), np.uint8)
    canvas[20:76, 300:356] = np.asarray(small)
    answer = client.post("/invocations/", json={"inputs": "data:image/png;base64," + png_b64(canvas)})
    assert answer.status_code == 200
    assert "star" in answer.json()["predictions"][:3]


@pytest.mark.e2e
def test_predict_answers_503_fast_when_model_server_down_then_recovers(
    served_store, tmp_path, quickdraw_test, quickdraw_dir
):
    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    payload = {"inputs": b64(quickdraw_test.images[0])}

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
            categories = backend.get("/categories").json()["categories"]
            assert categories == sorted(path.stem for path in quickdraw_dir.glob("*.npy"))
            stop([service])
            assert backend.post("/invocations/", json=payload).status_code == 503
        finally:
            stop([service])
