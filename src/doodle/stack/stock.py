"""The design's model server: stock `mlflow models serve` of name@alias.

It is not part of `doodle run`, which serves `doodle serve-model` (the same scoring protocol, but it
follows the alias). It stays here, defined once, because the backend is written against it: the tests
run the backend against it as the real model server and bench/predict.py measures it as the baseline.
"""

import os
import sys
from pathlib import Path

from doodle.config import Settings
from doodle.stack.catalogue import Service


def stock_model_server(settings: Settings, host: str, port: int) -> Service:
    uri = f"models:/{settings.model_name}@{settings.model_alias}"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "-h", host, "-p", str(port)]
    command += ["--env-manager", "local"]
    # `mlflow models serve` execs `uvicorn` by name: this interpreter's bin folder goes first on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "PATH": path}
    url = f"http://{host}:{port}"
    return Service("stock-model-server", command, f"{url}/invocations", f"{url}/ping", env=env)
