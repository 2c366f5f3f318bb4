"""GET /metrics exposes the design's five metrics and the doodle_ ones; errors are counted by route and status."""

from fastapi.testclient import TestClient

from doodle.api.app import create_app
from tests.utils.fakes import FakeModelClient
from tests.utils.images import b64, drawing


def sample(client: TestClient, name: str, **labels: str) -> float:
    """The value in the backend's own registry; 0 for a labelled series not yet created."""
    return client.app.state.metrics.registry.get_sample_value(name, labels) or 0.0


def test_metrics_count_predictions_saves_and_errors(api_client, fake_model):
    image = b64(drawing())
    fake_model.labels[image] = "star"
    assert api_client.post("/invocations/", json={"inputs": image}).status_code == 200
    assert api_client.post("/invocations/", json={"inputs": "!!"}).status_code == 400
    assert api_client.post("/save-image/", json={"image": image, "category": "cat"}).status_code == 200
    assert api_client.post("/save-image/", json={"image": image, "category": "../x"}).status_code == 400

    assert sample(api_client, "model_prediction_requests_total") == 2
    assert sample(api_client, "model_prediction_latency_seconds_count") == 2
    assert sample(api_client, "save_image_requests_total") == 2
    assert sample(api_client, "save_image_latency_seconds_count") == 2
    assert sample(api_client, "api_errors_total", endpoint="/invocations", status="400") == 1
    assert sample(api_client, "api_errors_total", endpoint="/save-image", status="400") == 1
    assert sample(api_client, "doodle_predictions_total", category="star") == 1
    assert sample(api_client, "doodle_prediction_confidence_count") == 1
    assert sample(api_client, "doodle_served_model_version") == int(fake_model.model_version)
    assert sample(api_client, "doodle_drawings_saved_total") == 1


def test_api_errors_tell_server_errors_from_bad_input(api_client, fake_model):
    image = {"inputs": b64(drawing())}
    assert api_client.post("/invocations/", json={"inputs": []}).status_code == 422
    assert api_client.post("/invocations/", content=b"x" * 6_000_000).status_code == 413
    fake_model.down = True
    assert api_client.post("/invocations/", json=image).status_code == 503
    assert api_client.get("/no-such-page").status_code == 404

    assert sample(api_client, "api_errors_total", endpoint="/invocations", status="422") == 1
    assert sample(api_client, "api_errors_total", endpoint="/invocations", status="413") == 1
    assert sample(api_client, "api_errors_total", endpoint="/invocations", status="503") == 1
    assert sample(api_client, "api_errors_total", endpoint="unmatched", status="404") == 1


def test_unexpected_error_answers_500_without_a_traceback_and_counts_as_a_server_error(settings):
    class BrokenModelClient(FakeModelClient):
        async def predict(self, images, top_k=None):
            raise RuntimeError("a bug")

    with TestClient(create_app(settings, model_client=BrokenModelClient()), raise_server_exceptions=False) as client:
        answer = client.post("/invocations/", json={"inputs": b64(drawing())})
        assert (answer.status_code, answer.json()) == (500, {"detail": "internal error"})
        assert sample(client, "api_errors_total", endpoint="/invocations", status="500") == 1


def test_metrics_answer_at_the_design_path_without_a_redirect(api_client):
    answer = api_client.get("/metrics", follow_redirects=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE model_prediction_requests_total counter" in answer.text


def test_backend_logs_actions_and_errors_to_app_log(api_client, settings):
    api_client.post("/invocations/", json={"inputs": "!!"})
    log = (settings.log_dir / "app.log").read_text()
    assert "request failed path=/invocations/ status=400" in log
