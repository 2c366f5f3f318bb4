"""Shared fixtures: settings on tmp dirs, real Quick Draw data, a real MLflow model server or a fake one."""

import os
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from doodle.api.app import create_app
from doodle.config import Settings, settings_under
from doodle.model.data import load_dataset
from doodle.pipeline import runs
from doodle.stack.supervisor import stop
from tests.utils.db import POSTGRES_URL
from tests.utils.fakes import FakeModelClient
from tests.utils.network import free_port
from tests.utils.services import start_model_server

REPO = Path(__file__).resolve().parents[1]
QUICKDRAW = REPO.parent / "shared" / "quickdraw"
QUICKDRAW_NEW = REPO.parent / "shared" / "quickdraw-new"  # 8 categories the bundled model never saw
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # Debian's chromium
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_under(tmp_path)


@pytest.fixture(scope="session")
def quickdraw_dir() -> Path:
    if not QUICKDRAW.is_dir():
        pytest.fail(f"Quick Draw data not found at {QUICKDRAW}: clone the project beside shared/")
    return QUICKDRAW


@pytest.fixture(scope="session")
def quickdraw_new_dir() -> Path:
    if not QUICKDRAW_NEW.is_dir():
        pytest.fail(f"Quick Draw data not found at {QUICKDRAW_NEW}: clone the project beside shared/")
    return QUICKDRAW_NEW


@pytest.fixture(scope="session")
def quickdraw_test(quickdraw_dir):
    """The bundled model's held-out test split (never seen in training)."""
    return load_dataset(quickdraw_dir, "test")


@pytest.fixture(scope="session")
def served_store(tmp_path_factory) -> Settings:
    """A fresh MLflow store with the bundled model registered at @production."""
    from doodle.model.registry import bootstrap, configure_mlflow

    settings = settings_under(tmp_path_factory.mktemp("store"))
    configure_mlflow(settings)
    bootstrap(settings.model_name, settings.model_alias)
    return settings


@pytest.fixture(scope="session")
def model_server(served_store):
    """A real `mlflow models serve` process; yields its invocations URL."""
    service = start_model_server(served_store, free_port())
    yield service.url
    stop([service])


@pytest.fixture
def client(model_server, tmp_path):
    """The real backend app talking to the real model server (e2e)."""
    app = create_app(settings_under(tmp_path, mlflow_hosted_model_url=model_server))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def fake_model() -> FakeModelClient:
    return FakeModelClient()


@pytest.fixture
def api_client(settings, fake_model):
    """The backend app with `fake_model` in place of the model server (unit tests)."""
    with TestClient(create_app(settings, model_client=fake_model)) as test_client:
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


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'pipeline.db'}"


@pytest.fixture
def postgresql_url():
    """A fresh schema in the real PostgreSQL; unreachable fails in CI and skips elsewhere."""
    admin = runs.connect(POSTGRES_URL)
    try:
        with admin.connect():
            pass
    except OperationalError as error:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}")
        pytest.skip("PostgreSQL is unreachable")
    schema = f"doodle_test_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")
