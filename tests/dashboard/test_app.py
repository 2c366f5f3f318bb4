"""The pipeline viewer's JSON, health, metrics and log, against SQLite and the real PostgreSQL."""

import os
import time
from datetime import UTC, datetime
from io import BytesIO

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from doodle.config import settings_under
from doodle.dashboard.app import create_dashboard_app
from doodle.drawings import save_drawing
from doodle.pipeline import store
from doodle.pipeline.store import STAGES, Status

pytestmark = pytest.mark.integration

UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.fixture
def viewer_settings(tmp_path, database_url):
    return settings_under(tmp_path, database_url=database_url)


@pytest.fixture
def runs_engine(viewer_settings):
    """The pipeline's side of the run store, with its table created."""
    engine = store.connect(viewer_settings.database_url)
    store.init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def viewer(viewer_settings):
    with TestClient(create_dashboard_app(viewer_settings)) as client:
        yield client


def metric_values(client: TestClient) -> dict[tuple, float]:
    """Every sample of GET /metrics as {(name, sorted label pairs): value}."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def png_bytes() -> bytes:
    buffer = BytesIO()
    Image.new("L", (28, 28), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def test_pipeline_runs_lists_newest_first_with_all_fields(viewer, runs_engine):
    ids = [store.create_run(runs_engine) for _ in range(3)]
    store.update_stage(runs_engine, ids[0], "scan", Status.RUNNING)
    store.update_stage(runs_engine, ids[0], "scan", Status.COMPLETE)
    store.mark_from(runs_engine, ids[2], "retrain", Status.FAILED, "retrain: out of memory")

    answer = viewer.get("/pipeline_runs")

    assert answer.status_code == 200
    runs = answer.json()
    assert [run["run_id"] for run in runs] == ids[::-1]
    assert all(set(run) == {column.name for column in store.pipeline_runs.columns} for run in runs)
    newest, oldest = runs[0], runs[-1]
    assert newest["message"] == "retrain: out of memory"
    assert [newest[f"stage_{n}_status"] for n in range(1, 8)] == ["waiting"] * 4 + ["failed"] * 3
    assert oldest["stage_1_status"] == "complete" and oldest["message"] is None
    start, end = (datetime.fromisoformat(oldest[f"stage_1_{field}"]) for field in ("start", "end"))
    assert start.tzinfo is not None and start <= end
    assert datetime.fromisoformat(oldest["start_time"]) <= start


def test_pipeline_runs_empty_store_gives_empty_list(viewer, viewer_settings):
    assert viewer.get("/pipeline_runs").json() == []  # the pipeline has not even created the table
    engine = store.connect(viewer_settings.database_url)
    store.init_db(engine)
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
        metrics = metric_values(client)

    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("run store unavailable")
    assert "Traceback" not in answer.text and "File " not in answer.text
    assert elapsed < 5
    assert health.status_code == 503
    assert metrics[("doodle_pipeline_store_up", ())] == 0
    assert ("doodle_pipeline_last_run_id", ()) not in metrics
    assert ("doodle_pipeline_waiting_drawings", ()) in metrics
    log = (settings.log_dir / "dashboard_backend.log").read_text()
    assert "run store read failed" in log and "Traceback" in log
    assert "path=/pipeline_runs status=503" in log


def test_metrics_follow_the_latest_run(viewer, runs_engine):
    success = store.create_run(runs_engine)
    for stage in STAGES:
        store.update_stage(runs_engine, success, stage, Status.RUNNING)
        store.update_stage(runs_engine, success, stage, Status.COMPLETE)
    latest = store.create_run(runs_engine)
    for stage in ("scan", "merge"):
        store.update_stage(runs_engine, latest, stage, Status.RUNNING)
        store.update_stage(runs_engine, latest, stage, Status.COMPLETE)
    store.update_stage(runs_engine, latest, "convert", Status.RUNNING)

    metrics = metric_values(viewer)

    def status_of(stage: str) -> list[str]:
        return [s for s in Status if metrics[("doodle_pipeline_stage_status", (("stage", stage), ("status", s)))] == 1]

    assert metrics[("doodle_pipeline_store_up", ())] == 1
    assert [status_of(stage) for stage in STAGES] == [["complete"]] * 2 + [["running"]] + [["waiting"]] * 4
    durations = {
        dict(labels)["stage"]: value
        for (name, labels), value in metrics.items()
        if name == "doodle_pipeline_stage_duration_seconds"
    }
    assert set(durations) == {"scan", "merge"} and all(value >= 0 for value in durations.values())
    assert metrics[("doodle_pipeline_last_run_id", ())] == latest
    assert metrics[("doodle_pipeline_runs_total", ())] == 2
    (finished,) = [run for run in store.list_runs(runs_engine) if run["run_id"] == success]
    expected = as_utc(finished["stage_7_end"]).timestamp()
    assert metrics[("doodle_pipeline_last_success_timestamp_seconds", ())] == pytest.approx(expected, abs=1e-3)


def test_metrics_without_runs_report_zero(viewer, runs_engine):
    metrics = metric_values(viewer)
    assert metrics[("doodle_pipeline_runs_total", ())] == 0
    assert metrics[("doodle_pipeline_last_run_id", ())] == 0
    assert metrics[("doodle_pipeline_last_success_timestamp_seconds", ())] == 0
    assert metrics[("doodle_pipeline_waiting_drawings", ())] == 0
    assert metrics[("doodle_pipeline_oldest_waiting_drawing_timestamp_seconds", ())] == 0


def test_metrics_count_waiting_drawings(tmp_path):
    settings = settings_under(tmp_path)
    drawings = [save_drawing(settings.img_data_location, category, png_bytes()) for category in ("cat", "cat", "sun")]
    oldest = time.time() - 3600
    os.utime(drawings[2], (oldest, oldest))
    (settings.img_data_location / "cat" / ".half-written.png.tmp").write_bytes(b"\x89PNG")

    with TestClient(create_dashboard_app(settings)) as client:
        metrics = metric_values(client)

    assert metrics[("doodle_pipeline_waiting_drawings", ())] == 3
    assert metrics[("doodle_pipeline_oldest_waiting_drawing_timestamp_seconds", ())] == pytest.approx(oldest)


def test_viewer_logs_requests_and_row_counts(viewer, runs_engine, viewer_settings):
    store.create_run(runs_engine)
    store.create_run(runs_engine)

    viewer.get("/pipeline_runs")

    log = (viewer_settings.log_dir / "dashboard_backend.log").read_text()
    assert "runs listed rows=2" in log
    assert "request method=GET path=/pipeline_runs status=200" in log
    assert "dashboard started database=" in log


def test_viewer_serves_the_page_and_its_assets(viewer):
    page = viewer.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "dashboard.js" in page.text and "style.css" in page.text
    assert viewer.get("/dashboard.js").status_code == 200
    assert viewer.get("/style.css").status_code == 200
