"""The registry: rollback moves the alias back and model servers follow; versions carry the data attribution."""

import os
import subprocess
import sys
import time

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from doodle.config import settings_env, settings_under
from doodle.model.registry import (
    NothingToRollBackError,
    alias_version,
    bootstrap,
    bundled_checkpoint,
    configure_mlflow,
    log_and_register,
    rollback,
    set_alias,
)
from doodle.stack.supervisor import stop
from tests.utils.network import free_port
from tests.utils.services import start_model_server

pytestmark = pytest.mark.integration


def register(settings) -> str:
    with mlflow.start_run():
        return log_and_register(bundled_checkpoint(), settings.model_name)


def rollback_command(settings) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "doodle.cli", "model", "rollback"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rollback_walks_back_through_the_promoted_versions_only(tmp_path):
    settings = settings_under(tmp_path)
    configure_mlflow(settings)
    name, alias = settings.model_name, settings.model_alias
    with pytest.raises(NothingToRollBackError, match="does not exist"):
        rollback(name, alias)
    assert bootstrap(name, alias) == "1"
    set_alias(name, alias, register(settings))  # 2, promoted
    assert register(settings) == "3"  # refused by the gate: registered, never served
    set_alias(name, alias, register(settings))  # 4, promoted

    assert rollback(name, alias) == ("4", "2")
    assert rollback(name, alias) == ("2", "1")
    with pytest.raises(NothingToRollBackError, match="version 1 is the first"):
        rollback(name, alias)
    assert alias_version(name, alias) == "1"


def test_every_registered_version_carries_the_data_attribution(tmp_path):
    settings = settings_under(tmp_path)
    configure_mlflow(settings)
    bootstrap(settings.model_name, settings.model_alias)
    client = MlflowClient()
    for description in (
        client.get_registered_model(settings.model_name).description,
        client.get_model_version(settings.model_name, register(settings)).description,
    ):
        assert "Quick, Draw! Dataset (Google, CC BY 4.0" in description


@pytest.mark.e2e
def test_rollback_command_moves_the_served_model_back(tmp_path):
    settings = settings_under(tmp_path)
    configure_mlflow(settings)
    bootstrap(settings.model_name, settings.model_alias)
    server = start_model_server(settings, free_port(), hot_swap=True)
    version_url = server.url.replace("/invocations", "/model-version")

    def served_version(expected: str) -> str:
        deadline = time.monotonic() + 30
        while (served := httpx.get(version_url).json()["version"]) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        return served

    try:
        set_alias(settings.model_name, settings.model_alias, register(settings))
        assert served_version("2") == "2"

        done = rollback_command(settings)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{settings.model_name}@{settings.model_alias}: version 2 -> 1"
        assert served_version("1") == "1"

        refused = rollback_command(settings)
        assert refused.returncode == 2
        assert "refused: version 1 is the first" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        stop([server])
