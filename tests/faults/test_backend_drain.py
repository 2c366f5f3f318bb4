"""A backend asked to stop drains first: its health check fails at once, its requests are still answered."""

import dataclasses
import signal
import subprocess
import time

import httpx
import pytest

from doodle.config import settings_under
from doodle.stack.catalogue import Service, backend, doodle_command
from doodle.stack.supervisor import stop
from tests.utils.docker import wait_for
from tests.utils.images import b64, drawing
from tests.utils.network import free_port
from tests.utils.services import HOST, start_or_fail

pytestmark = pytest.mark.e2e

DRAIN_S = 4.0


@pytest.fixture
def draining_backend(model_server, tmp_path):
    settings = settings_under(tmp_path, mlflow_hosted_model_url=model_server)
    service = backend(settings, HOST, free_port())
    service = dataclasses.replace(service, command=[*service.command, "--drain-seconds", str(DRAIN_S)])
    yield start_or_fail(service, settings)
    stop([service])


def base_url(service: Service) -> str:
    return service.health_url.removesuffix("/health")


def test_a_stopping_backend_fails_its_health_check_but_answers_predictions_until_the_drain_ends(
    draining_backend,
):
    body = {"inputs": b64(drawing())}
    with httpx.Client(base_url=base_url(draining_backend), timeout=10) as client:
        assert client.get("/health").status_code == 200
        signalled = time.monotonic()
        draining_backend.process.send_signal(signal.SIGTERM)
        wait_for("/health to answer 503", lambda: client.get("/health").status_code == 503, 2, interval_s=0.05)
        health_failed_s = time.monotonic() - signalled
        answers = []
        while draining_backend.process.poll() is None:
            try:
                health, prediction = client.get("/health"), client.post("/invocations/", json=body)
            except httpx.TransportError:
                break  # it stopped listening
            answers.append((time.monotonic() - signalled, health, prediction))
            time.sleep(0.1)
        draining_backend.process.wait(10)
        stopped_s = time.monotonic() - signalled

    print(  # noqa: T201
        f"health failed {health_failed_s * 1000:.0f} ms after SIGTERM; {len(answers)} predictions answered "
        f"while draining; stopped after {stopped_s:.1f} s (drain {DRAIN_S:g} s)"
    )
    assert all(health.status_code == 503 and health.json()["status"] == "draining" for _, health, _ in answers)
    assert all(prediction.status_code == 200 and prediction.json()["predictions"] for *_, prediction in answers)
    assert answers[-1][0] >= DRAIN_S - 0.5, "it stopped answering before the drain ended"
    assert stopped_s < DRAIN_S + 5


def test_a_second_signal_stops_a_draining_backend_at_once(draining_backend):
    with httpx.Client(base_url=base_url(draining_backend), timeout=10) as client:
        draining_backend.process.send_signal(signal.SIGTERM)
        wait_for("/health to answer 503", lambda: client.get("/health").status_code == 503, 2, interval_s=0.05)
    signalled = time.monotonic()
    draining_backend.process.send_signal(signal.SIGTERM)
    draining_backend.process.wait(10)
    assert time.monotonic() - signalled < DRAIN_S / 2


def test_drain_needs_a_single_worker():
    command = doodle_command("api", "--workers", "2", "--drain-seconds", "5")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--drain-seconds needs --workers 1" in refused.stderr
