"""The pipeline viewer's JSON, health, metrics and log, against SQLite and the real PostgreSQL."""

import os
import time
from datetime import datetime
from io import BytesIO

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from doodle.config import settings_under
from doodle.dashboard.app import create_dashboard_app
from doodle.drawings import save_drawing
from doodle.pipeline import runs
from doodle.pipeline.stages import STAGES, Status

pytestmark = pytest.mark.integration

UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.fixture
def viewer_settings(tmp_path, database_url):
    return settings_under(tmp_path, database_url=database_url)


@pytest.fixture
def runs_engine(viewer_settings):
    """The pipeline's side of the run store, with its table created."""
    engine = runs.connect(viewer_settings.database_url)
    runs.init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def viewer(viewer_settings):
    with TestClient(create_dashboard_app(viewer_settings)) as client:
        yield client


def sample(client: TestClient, name: str, **labels: str) -> float | None:
    """One sample of the viewer's registry, collected now; None when it is absent."""
    return client.app.state.registry.get_sample_value(name, labels)


def png_bytes() -> bytes:
    buffer = BytesIO()
    Image.new("L", (28, 28), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pipeline_runs_lists_newest_first_with_all_fields(viewer, runs_engine):
    ids = [runs.create_run(runs_engine) for _ in range(3)]
    runs.update_stage(runs_engine, ids[0], "scan", Status.RUNNING)
    runs.update_stage(runs_engine, ids[0], "scan", Status.COMPLETE)
    runs.mark_from(runs_engine, ids[2], "retrain", Status.FAILED, "retrain: out of memory")

    answer = viewer.get("/pipeline_runs")

    assert answer.status_code == 200
    listed = answer.json()
    assert [run["run_id"] for run in listed] == ids[::-1]
    assert all(set(run) == {column.name for column in runs.pipeline_runs.columns} for run in listed)
    newest, oldest = listed[0], listed[-1]
    assert newest["message"] == "retrain: out of memory"
    assert [newest[f"stage_{n}_status"] for n in range(1, 8)] == ["waiting"] * 4 + ["failed"] * 3
    assert oldest["stage_1_status"] == "complete" and oldest["message"] is None
    start, end = (datetime.fromisoformat(oldest[f"stage_1_{field}"]) for field in ("start", "end"))
    assert start.tzinfo is not None and start <= end
    assert datetime.fromisoformat(oldest["start_time"]) <= start


def test_pipeline_runs_empty_store_gives_empty_list(viewer, viewer_settings):
    assert viewer.get("/pipeline_runs").json() == []  # the pipeline has not even created the table
    engine = runs.connect(viewer_settings.database_url)
    runs.init_db(engine)
    engine.dispose()
    assert viewer.get("/pipeline_runs").json() == []


def test_health_ok_when_store_answers(viewer):
    answer = viewer.get("/health")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_pipeline_runs_store_unreachable_gives_503_without_traceback(tmp_path):
    settings = settings_under(tmp_path, database_url=UNREACHABLE_URL)
    with TestClient(create_dashboard_app(settings)) as client:
        started = time.monotonic()
        answer = client.get("/pipeline_runs")
        elapsed = time.monotonic() - started
        health = client.get("/health")
        exposition = client.get("/metrics")
        store_up = sample(client, "doodle_pipeline_store_up")
        last_run_id = sample(client, "doodle_pipeline_last_run_id")
        waiting = sample(client, "doodle_pipeline_waiting_drawings")

    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("run store unavailable")
    assert "Traceback" not in answer.text and "File " not in answer.text
    assert elapsed < 5
    assert health.status_code == 503
    assert exposition.status_code == 200 and "doodle_pipeline_store_up 0.0" in exposition.text
    assert store_up == 0
    assert last_run_id is None
    assert waiting is not None
    log = (settings.log_dir / "dashboard_backend.log").read_text()
    assert "run store read failed" in log and "Traceback" in log
    assert "path=/pipeline_runs status=503" in log


def test_metrics_follow_the_latest_run(viewer, runs_engine):
    success = runs.create_run(runs_engine)
    for stage in STAGES:
        runs.update_stage(runs_engine, success, stage, Status.RUNNING)
        runs.update_stage(runs_engine, success, stage, Status.COMPLETE)
    latest = runs.create_run(runs_engine)
    for stage in ("scan", "merge"):
        runs.update_stage(runs_engine, latest, stage, Status.RUNNING)
        runs.update_stage(runs_engine, latest, stage, Status.COMPLETE)
    runs.update_stage(runs_engine, latest, "convert", Status.RUNNING)

    def status_of(stage: str) -> list[str]:
        return [s for s in Status if sample(viewer, "doodle_pipeline_stage_status", stage=stage, status=s) == 1]

    def duration_of(stage: str) -> float | None:
        return sample(viewer, "doodle_pipeline_stage_duration_seconds", stage=stage)

    assert sample(viewer, "doodle_pipeline_store_up") == 1
    assert [status_of(stage) for stage in STAGES] == [["complete"]] * 2 + [["running"]] + [["waiting"]] * 4
    durations = {stage: duration_of(stage) for stage in STAGES if duration_of(stage) is not None}
    assert set(durations) == {"scan", "merge"} and all(value >= 0 for value in durations.values())
    assert sample(viewer, "doodle_pipeline_last_run_id") == latest
    assert sample(viewer, "doodle_pipeline_runs_total") == 2
    (finished,) = [run for run in runs.list_runs(runs_engine) if run.run_id == success]
    expected = finished.ended("clean").timestamp()
    assert sample(viewer, "doodle_pipeline_last_success_timestamp_seconds") == pytest.approx(expected, abs=1e-3)


def test_metrics_without_runs_report_zero(viewer, runs_engine):
    assert sample(viewer, "doodle_pipeline_runs_total") == 0
    assert sample(viewer, "doodle_pipeline_last_run_id") == 0
    assert sample(viewer, "doodle_pipeline_last_success_timestamp_seconds") == 0
    assert sample(viewer, "doodle_pipeline_waiting_drawings") == 0
    assert sample(viewer, "doodle_pipeline_oldest_waiting_drawing_timestamp_seconds") == 0


def test_metrics_count_waiting_drawings(tmp_path):
    settings = settings_under(tmp_path)
    drawings = [save_drawing(settings.img_data_location, category, png_bytes()) for category in ("cat", "cat", "sun")]
    oldest = time.time() - 3600
    os.utime(drawings[2], (oldest, oldest))
    (settings.img_data_location / "cat" / ".half-written.png.tmp").write_bytes(b"\x89PNG")

    with TestClient(create_dashboard_app(settings)) as client:
        assert sample(client, "doodle_pipeline_waiting_drawings") == 3
        assert sample(client, "doodle_pipeline_oldest_waiting_drawing_timestamp_seconds") == pytest.approx(oldest)


def test_viewer_logs_polls_only_at_debug(runs_engine, viewer_settings):
    runs.create_run(runs_engine)
    runs.create_run(runs_engine)
    log_file = viewer_settings.log_dir / "dashboard_backend.log"

    with TestClient(create_dashboard_app(viewer_settings)) as client:
        for path in ("/pipeline_runs", "/health", "/metrics"):
            assert client.get(path).status_code == 200
        assert client.get("/no-such-page").status_code == 404
    quiet = log_file.read_text()
    log_file.unlink()
    with TestClient(create_dashboard_app(viewer_settings.model_copy(update={"log_level": "DEBUG"}))) as client:
        client.get("/pipeline_runs")
    verbose = log_file.read_text()

    assert "dashboard started database=" in quiet and "dashboard stopped" in quiet
    assert "request method=GET path=/no-such-page status=404" in quiet
    assert "status=200" not in quiet and "runs listed" not in quiet
    assert "runs listed rows=2" in verbose
    assert "request method=GET path=/pipeline_runs status=200" in verbose


def test_viewer_serves_the_page_and_its_assets(viewer):
    page = viewer.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "dashboard.js" in page.text and "style.css" in page.text
    assert viewer.get("/dashboard.js").status_code == 200
    assert viewer.get("/style.css").status_code == 200


def test_viewer_answers_any_origin_by_default(viewer, runs_engine):
    runs.create_run(runs_engine)
    answer = viewer.get("/pipeline_runs", headers={"Origin": "http://elsewhere.example:9999"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"


def test_viewer_answers_only_listed_origins_when_cors_origins_is_set(viewer_settings, runs_engine):
    restricted = viewer_settings.model_copy(update={"cors_origins": ["http://ops.example"]})
    with TestClient(create_dashboard_app(restricted)) as client:
        listed = client.get("/pipeline_runs", headers={"Origin": "http://ops.example"})
        other = client.get("/pipeline_runs", headers={"Origin": "http://elsewhere.example"})
    assert listed.headers["access-control-allow-origin"] == "http://ops.example"
    assert "access-control-allow-origin" not in other.headers
