"""The orchestrator against real stage subprocesses and a real run store (SQLite and PostgreSQL)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from doodle.config import settings_env, settings_under
from doodle.pipeline import runs
from doodle.pipeline.orchestrator import PipelineBusyError, file_lock, run_pipeline
from doodle.pipeline.stages import STAGES, Status
from tests.utils.drawings import save_drawings, stored_rows, synthetic_images

pytestmark = pytest.mark.integration


def statuses(run: runs.Run) -> list[Status]:
    return [run.status(stage) for stage in STAGES]


def test_run_not_triggered_when_too_few_drawings(tmp_path, database_url):
    settings = settings_under(tmp_path, database_url=database_url, min_new_images=5)
    save_drawings(settings.img_data_location, synthetic_images(2), "cat")
    engine = runs.connect(database_url)
    assert run_pipeline(settings, engine, report=lambda line: None) == 0
    (run,) = runs.list_runs(engine)
    assert statuses(run) == ["complete"] + ["not_triggered"] * 6
    assert "fewer than MIN_NEW_IMAGES=5" in run.message


def test_failed_stage_fails_the_rest_and_halts(tmp_path, database_url):
    # No model is registered in this fresh MLflow store, so retrain (stage 5) must fail.
    settings = settings_under(tmp_path, database_url=database_url, min_new_images=1)
    save_drawings(settings.img_data_location, synthetic_images(3), "cat")
    engine = runs.connect(database_url)
    assert run_pipeline(settings, engine, report=lambda line: None) == 1
    (run,) = runs.list_runs(engine)
    assert statuses(run) == ["complete"] * 4 + ["failed"] * 3
    assert run.message.startswith("retrain:") and run.ended("retrain") is not None
    assert (settings.log_dir / "stage5.log").read_text().count("Traceback") >= 1
    assert len(stored_rows(settings.data_dir)) == 3


def test_second_run_is_refused_while_one_is_active(tmp_path):
    settings = settings_under(tmp_path)
    with file_lock(settings.pipeline_dir):
        with pytest.raises(PipelineBusyError, match="another pipeline run is active"):
            run_pipeline(settings, runs.connect(settings.database_url))


def test_killed_run_does_not_block_the_next(tmp_path):
    settings = settings_under(tmp_path, min_new_images=1)
    expected = save_drawings(settings.img_data_location, synthetic_images(20), "cat")
    engine = runs.connect(settings.database_url)
    runs.init_db(engine)
    process = subprocess.Popen(
        [sys.executable, "-m", "doodle.cli", "pipeline", "run"],
        env={**os.environ, **settings_env(settings)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recent = runs.list_runs(engine)
        if recent and recent[0].status("convert") in (Status.RUNNING, Status.COMPLETE):
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    assert run_pipeline(settings, engine, report=lambda line: None) == 1  # retrain fails: no model here
    second, first = runs.list_runs(engine)
    assert "interrupted" in first.message
    assert Status.RUNNING not in statuses(first)
    assert statuses(second)[:4] == ["complete"] * 4
    assert sorted(stored_rows(settings.data_dir)) == sorted(row.tobytes() for row in expected)
