"""Zero-downtime rollout: the alias moves while the backend keeps predicting."""

import threading
import time

import mlflow
import pytest
from fastapi.testclient import TestClient

from doodle.api.app import create_app
from doodle.config import settings_under
from doodle.model.registry import bootstrap, bundled_checkpoint, configure_mlflow, log_and_register, set_alias
from doodle.stack.supervisor import stop
from tests.utils.images import b64
from tests.utils.network import free_port
from tests.utils.services import start_model_server

pytestmark = pytest.mark.e2e


def test_rollout_switches_version_without_failed_requests(tmp_path, quickdraw_test):
    settings = settings_under(tmp_path / "store")
    configure_mlflow(settings)
    assert bootstrap(settings.model_name, settings.model_alias) == "1"
    server = start_model_server(settings, free_port(), hot_swap=True)
    backend_settings = settings_under(tmp_path / "backend", mlflow_hosted_model_url=server.url)
    answers: list[tuple[float, int, str | None]] = []
    traffic_done = threading.Event()

    def keep_predicting(client: TestClient) -> None:
        i = 0
        while not traffic_done.is_set():
            response = client.post("/invocations/", json={"inputs": b64(quickdraw_test.images[i % 500])})
            version = response.json().get("model_version") if response.status_code == 200 else None
            answers.append((time.monotonic(), response.status_code, version))
            i += 1

    try:
        with TestClient(create_app(backend_settings)) as client:
            traffic = threading.Thread(target=keep_predicting, args=(client,))
            traffic.start()
            time.sleep(2)
            with mlflow.start_run():
                version = log_and_register(bundled_checkpoint(), settings.model_name)
            set_alias(settings.model_name, settings.model_alias, version)
            moved = time.monotonic()
            deadline = moved + 30
            while time.monotonic() < deadline and not any(v == version for _, _, v in answers):
                time.sleep(0.2)
            time.sleep(1)
            traffic_done.set()
            traffic.join()
    finally:
        traffic_done.set()
        stop([server])

    assert version == "2"
    assert len(answers) > 20
    assert [code for _, code, _ in answers if code != 200] == []
    first_new = min(t for t, _, v in answers if v == version)
    assert first_new - moved < 30
    assert {v for _, _, v in answers} == {"1", "2"}
