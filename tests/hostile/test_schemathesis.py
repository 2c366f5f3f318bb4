"""Schemathesis against the backend's and the viewer's own OpenAPI schemas: no 5xx, clear 4xx, a clean store.

The backend talks to the fake model client, which refuses what the served model refuses."""

import base64
import io
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from doodle.api.app import create_app
from doodle.api.schemas import MAX_IMAGES_PER_REQUEST
from doodle.categories import InvalidCategoryError, normalize_category
from doodle.config import settings_under
from doodle.dashboard.app import create_dashboard_app
from doodle.drawings import TEMP_PREFIX
from doodle.imaging import encode_bitmap
from doodle.pipeline import runs
from doodle.pipeline.stages import Status
from tests.utils.fakes import FakeModelClient

EXAMPLES_PER_OPERATION = 50
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same examples on every CI run
    deadline=None,
    database=None,
    # One app and store per operation, shared by its examples: the per-example checks compare before and after.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# Left out on purpose: `positive_data_acceptance` (any string is schema-valid, few are drawings or
# category names) and the auth checks (the bearer token is only required when API_TOKEN is set).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    negative_data_rejection,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]


def openapi_document(factory) -> dict:
    """The app's schema, needed at import by `parametrize`; it does not depend on the settings.

    (`schemathesis.pytest.from_fixture` would build it from a fixture, but fails under pytest 9.)
    """
    with tempfile.TemporaryDirectory() as root, mock.patch(f"{factory.__module__}.configure_logging"):
        return factory(settings_under(Path(root))).openapi()


# The bearer token is optional (only with API_TOKEN set) but the schema cannot say so: do not generate or drop it.
BACKEND = schemathesis.openapi.from_dict(
    openapi_document(create_app),
    config=schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}}),
)
VIEWER = schemathesis.openapi.from_dict(openapi_document(create_dashboard_app))


def drawing_payloads() -> list[str]:
    """Real drawings in both wire forms: random strings are almost never one."""
    bitmap = np.zeros((28, 28), np.uint8)
    bitmap[6:22, 8] = 255
    bitmap[6, 8:20] = 255
    canvas = np.full((300, 300), 255, np.uint8)
    canvas[100:110, 40:260] = 0
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return [encode_bitmap(bitmap), "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()]


DRAWINGS = drawing_payloads()


def sloppy_name(text: str) -> str:
    """A valid name in odd spacing and case: the letters, digits, spaces, '_' and '-' of `text`, plus an 'x'."""
    return "".join(c for c in text if c.isascii() and (c.isalnum() or c in " _-"))[:63] + "x"


def stand_ins(field: str, value) -> list:
    """Schema-valid alternatives to a generated value. Values made schema-invalid on purpose (wrong type,
    too long, too many) are kept alone, so a negative case stays negative."""
    if field in ("image", "inputs") and isinstance(value, str) and len(value) < 1000:
        return [value, *DRAWINGS]
    if field == "inputs" and isinstance(value, list) and 0 < len(value) <= MAX_IMAGES_PER_REQUEST:
        return [value, DRAWINGS] if all(isinstance(item, str) for item in value) else [value]
    if field == "category" and isinstance(value, str) and len(value) <= 1000:
        return [value, sloppy_name(value)]
    return [value]


@BACKEND.hook
def flatmap_body(context, body):
    """Random strings are almost never drawings or names, so bodies also get real drawings and
    name-like categories: then the category rules and the store face the fuzzer alone."""
    if not isinstance(body, dict):
        return st.just(body)
    return st.fixed_dictionaries({key: st.sampled_from(stand_ins(key, value)) for key, value in body.items()})


def stored_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def assert_store_holds_only_finished_drawings(root: Path) -> None:
    if not root.exists():
        return
    for folder in root.iterdir():
        assert folder.is_dir(), f"stray file in the store: {folder.name!r}"
        try:
            assert normalize_category(folder.name) == folder.name
        except InvalidCategoryError:
            pytest.fail(f"folder with an invalid category name: {folder.name!r}")
        for entry in folder.iterdir():
            assert entry.is_file() and entry.suffix == ".png", f"unexpected entry {entry}"
            assert not entry.name.startswith(TEMP_PREFIX), f"temp file left behind: {entry}"


def assert_clear_client_error(response) -> None:
    """4xx with a JSON `detail` a person can read, never a traceback."""
    assert 400 <= response.status_code < 500
    detail = response.json()["detail"]
    assert detail
    assert "Traceback" not in response.text


@pytest.fixture
def backend_settings(tmp_path):
    return settings_under(tmp_path)


@pytest.fixture
def backend_app(backend_settings):
    return create_app(backend_settings, model_client=FakeModelClient())


@BACKEND.parametrize()
@FUZZ
def test_backend_answers_generated_requests_without_5xx_and_stores_only_valid_drawings(
    case, backend_app, backend_settings
):
    root = backend_settings.img_data_location
    before = stored_files(root)

    response = case.call_and_validate(app=backend_app, checks=CHECKS)

    after = stored_files(root)
    assert_store_holds_only_finished_drawings(root)
    if response.status_code >= 400:
        assert_clear_client_error(response)
    if response.status_code == 200 and case.path == "/save-image/":
        assert after - before == {root / response.json()["filename"]}
    else:
        assert after == before


@pytest.fixture
def viewer_settings(tmp_path):
    return settings_under(tmp_path)


@pytest.fixture
def runs_engine(viewer_settings):
    """A run store with a finished, a failed and a running run."""
    engine = runs.connect(viewer_settings.database_url)
    runs.init_db(engine)
    done, failed, running = (runs.create_run(engine) for _ in range(3))
    runs.mark_from(engine, done, "scan", Status.COMPLETE)
    runs.mark_from(engine, failed, "retrain", Status.FAILED, "retrain: out of memory")
    runs.update_stage(engine, running, "scan", Status.RUNNING)
    yield engine
    engine.dispose()


def all_runs(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(runs.pipeline_runs))]


@pytest.fixture
def viewer_app(viewer_settings, runs_engine):
    return create_dashboard_app(viewer_settings)


@pytest.mark.integration  # the viewer reads a SQLite run store
@VIEWER.parametrize()
@FUZZ
def test_viewer_answers_generated_requests_without_5xx_and_changes_nothing(
    case, viewer_app, viewer_settings, runs_engine
):
    runs_before = all_runs(runs_engine)

    response = case.call_and_validate(app=viewer_app, checks=CHECKS)

    if response.status_code >= 400:
        assert_clear_client_error(response)
    assert all_runs(runs_engine) == runs_before
    assert not viewer_settings.img_data_location.exists()
