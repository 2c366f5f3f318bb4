"""Shared fixtures: settings on tmp dirs, real Quick Draw data, a real MLflow model server."""

import asyncio
import base64
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from doodle import stack
from doodle.api.app import create_app
from doodle.config import Settings, settings_under
from doodle.model.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
QUICKDRAW = REPO.parent / "shared" / "quickdraw"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # Debian's chromium
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


make_settings = settings_under


def run_async(coroutine):
    """asyncio.run in its own thread: Playwright's sync API leaves a running loop in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as runner:
        return runner.submit(asyncio.run, coroutine).result()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def quickdraw_dir() -> Path:
    if not QUICKDRAW.is_dir():
        pytest.fail(f"Quick Draw data not found at {QUICKDRAW}: clone the project beside shared/")
    return QUICKDRAW


@pytest.fixture(scope="session")
def quickdraw_test(quickdraw_dir):
    """The bundled model's held-out test split (never seen in training)."""
    return load_dataset(quickdraw_dir, "test")


def b64(bitmap: np.ndarray) -> str:
    return base64.b64encode(np.asarray(bitmap, dtype=np.uint8).tobytes()).decode()


@pytest.fixture(scope="session")
def served_store(tmp_path_factory) -> Settings:
    """A fresh MLflow store with the bundled model registered at @production."""
    from doodle.model.registry import bootstrap, configure_mlflow

    settings = make_settings(tmp_path_factory.mktemp("store"))
    configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_experiment, settings.mlflow_artifacts_dir)
    bootstrap(settings.model_name, settings.model_alias)
    return settings


def start_model_server(settings: Settings, port: int, hot_swap: bool = False) -> stack.Service:
    """Stock `mlflow models serve`, or the alias-following server when `hot_swap`."""
    factory = stack.model_server if hot_swap else stack.stock_model_server
    service = factory(settings, "127.0.0.1", port)
    stack.start(service, settings.log_dir)
    if stack.wait_healthy([service], timeout_s=120):
        stack.stop([service])
        pytest.fail(f"model server did not start, see {settings.log_dir}")
    return service


@pytest.fixture(scope="session")
def model_server(served_store):
    """A real `mlflow models serve` process; yields its invocations URL."""
    service = start_model_server(served_store, free_port())
    yield service.url
    stack.stop([service])


@pytest.fixture
def client(model_server, tmp_path):
    """The real backend app talking to the real model server."""
    app = create_app(make_settings(tmp_path, mlflow_hosted_model_url=model_server))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where browser tests save screenshots: docs/screenshots only with UPDATE_SCREENSHOTS=1."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        return REPO / "docs" / "screenshots"
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context.new_page()
    context.close()
