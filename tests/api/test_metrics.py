"""GET /metrics exposes the design's five metrics and the doodle_ ones."""

import pytest

from tests.utils.images import b64

pytestmark = pytest.mark.e2e


def sample(client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_predictions_saves_and_errors(client, quickdraw_test):
    image = b64(quickdraw_test.images[0])
    assert client.post("/invocations/", json={"inputs": image}).status_code == 200
    assert client.post("/invocations/", json={"inputs": "!!"}).status_code == 400
    assert client.post("/save-image/", json={"image": image, "category": "cat"}).status_code == 200
    assert client.post("/save-image/", json={"image": image, "category": "../x"}).status_code == 400

    assert sample(client, "model_prediction_requests_total") == 2
    assert sample(client, "model_prediction_latency_seconds_count") == 2
    assert sample(client, "save_image_requests_total") == 2
    assert sample(client, "save_image_latency_seconds_count") == 2
    assert sample(client, 'api_errors_total{endpoint="/invocations"}') == 1
    assert sample(client, 'api_errors_total{endpoint="/save-image"}') == 1
    assert sample(client, "doodle_prediction_confidence_count") == 1
    assert sample(client, "doodle_served_model_version") == 1  # the bundled model is version 1
    text = client.get("/metrics").text
    assert "doodle_predictions_total{category=" in text


def test_metrics_answer_at_the_design_path_without_a_redirect(client):
    answer = client.get("/metrics", follow_redirects=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE model_prediction_requests_total counter" in answer.text


def test_backend_logs_actions_and_errors_to_app_log(client, tmp_path):
    client.post("/invocations/", json={"inputs": "!!"})
    log = (tmp_path / "logs" / "app.log").read_text()
    assert "request failed path=/invocations/ status=400" in log
