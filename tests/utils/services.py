"""Real servers started by the tests."""

import pytest

from doodle.config import Settings
from doodle.stack.catalogue import Service, model_server
from doodle.stack.stock import stock_model_server
from doodle.stack.supervisor import StartupError, start, stop, wait_healthy

HOST = "127.0.0.1"


def start_or_fail(service: Service, settings: Settings, timeout_s: float = 120) -> Service:
    """Start `service` and wait until it is healthy; otherwise stop it and fail the test, saying why."""
    start(service, settings.log_dir)
    try:
        wait_healthy([service], timeout_s)
    except StartupError as error:
        stop([service])
        pytest.fail(str(error))
    return service


def start_model_server(settings: Settings, port: int, hot_swap: bool = False) -> Service:
    """Stock `mlflow models serve` (the design's server), or `doodle serve-model` when `hot_swap`."""
    factory = model_server if hot_swap else stock_model_server
    return start_or_fail(factory(settings, HOST, port), settings)
