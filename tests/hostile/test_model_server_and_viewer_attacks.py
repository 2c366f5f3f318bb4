"""Hostile requests the backend's schema never lets through: pixel arrays sent straight to the real model
server, and path traversal against the pipeline viewer's static files."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from doodle.config import settings_under
from doodle.dashboard.app import create_dashboard_app

pytestmark = pytest.mark.e2e

INK = [0] * 400 + [255] + [0] * 383  # one dot: a valid drawing


def with_first_pixel(value: str) -> str:
    """JSON text of one 784-pixel image; `value` may be NaN or Infinity, which json.dumps will not write."""
    return '{"inputs": [[' + ", ".join([value] + [str(v) for v in INK[1:]]) + "]]}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(with_first_pixel("NaN"), "NaN or infinite", id="NaN"),
        pytest.param(with_first_pixel("Infinity"), "NaN or infinite", id="infinity"),
        pytest.param(with_first_pixel("-Infinity"), "NaN or infinite", id="minus infinity"),
        pytest.param(with_first_pixel("-1"), "outside 0-255", id="negative"),
        pytest.param(with_first_pixel("256"), "outside 0-255", id="256"),
        pytest.param(with_first_pixel("1e300"), "outside 0-255", id="1e300"),
        pytest.param(with_first_pixel(str(10**30)), "outside 0-255", id="huge integer"),
        pytest.param(json.dumps({"inputs": [INK[:783]]}), "expected 784", id="783 values"),
        pytest.param(json.dumps({"inputs": [INK + [0]]}), "expected 784", id="785 values"),
        pytest.param(json.dumps({"inputs": [[[[1]]]]}), "expected 784", id="nested"),
        pytest.param(json.dumps({"inputs": []}), "empty", id="no images"),
        pytest.param(json.dumps({"inputs": [[0] * 784]}), "empty", id="blank image"),
        pytest.param(json.dumps({"inputs": [INK] * 1025}), "too many images", id="1025 images"),
        pytest.param(json.dumps({"inputs": [[1, 2], [3]]}), "", id="ragged"),
    ],
)
def test_model_server_refuses_bad_pixel_arrays_with_400(model_server, body, message):
    answer = httpx.post(model_server, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 400
    assert message in answer.json()["message"]
    assert "Traceback" not in answer.text


def test_model_server_answers_the_valid_pixel_array_the_attacks_are_made_from(model_server):
    answer = httpx.post(model_server, json={"inputs": [INK]}, timeout=30)
    assert answer.status_code == 200
    assert len(answer.json()["predictions"]) == 1


@pytest.fixture
def viewer(tmp_path):
    with TestClient(create_dashboard_app(settings_under(tmp_path))) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/app.py",
        "/..%5c..%5capp.py",
        "/%00",
        "/index.html%00.js",
        "//etc/passwd",
    ],
)
def test_viewer_static_files_do_not_escape_their_folder(viewer, path):
    answer = viewer.get(path)
    assert answer.status_code == 404
    assert "root:" not in answer.text and "create_dashboard_app" not in answer.text
