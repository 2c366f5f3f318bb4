"""Real servers started by the tests."""

import pytest

from doodle import stack
from doodle.config import Settings


def start_model_server(settings: Settings, port: int, hot_swap: bool = False) -> stack.Service:
    """Stock `mlflow models serve`, or the alias-following server when `hot_swap`."""
    factory = stack.model_server if hot_swap else stack.stock_model_server
    service = factory(settings, "127.0.0.1", port)
    stack.start(service, settings.log_dir)
    if stack.wait_healthy([service], timeout_s=120):
        stack.stop([service])
        pytest.fail(f"model server did not start, see {settings.log_dir}")
    return service
