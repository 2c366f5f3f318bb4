"""GET /metrics exposes the design's five metrics and the doodle_ ones."""

from tests.utils.images import b64, drawing


def sample(api_client, name: str, **labels: str) -> float:
    """The value in the backend's own registry; 0 for a labelled series not yet created."""
    return api_client.app.state.metrics.registry.get_sample_value(name, labels) or 0.0


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
    assert sample(api_client, "api_errors_total", endpoint="/invocations") == 1
    assert sample(api_client, "api_errors_total", endpoint="/save-image") == 1
    assert sample(api_client, "doodle_predictions_total", category="star") == 1
    assert sample(api_client, "doodle_prediction_confidence_count") == 1
    assert sample(api_client, "doodle_served_model_version") == int(fake_model.model_version)
    assert sample(api_client, "doodle_drawings_saved_total") == 1


def test_metrics_answer_at_the_design_path_without_a_redirect(api_client):
    answer = api_client.get("/metrics", follow_redirects=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE model_prediction_requests_total counter" in answer.text


def test_backend_logs_actions_and_errors_to_app_log(api_client, settings):
    api_client.post("/invocations/", json={"inputs": "!!"})
    log = (settings.log_dir / "app.log").read_text()
    assert "request failed path=/invocations/ status=400" in log
