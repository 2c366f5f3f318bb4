"""The run store (real PostgreSQL) goes away in the middle of a run, then comes back."""

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy.engine import make_url

from doodle.config import settings_env, settings_under
from doodle.drawings import list_drawings
from doodle.model.registry import bootstrap, configure_mlflow
from doodle.pipeline import runs
from doodle.pipeline.stages import STAGES, Status
from tests.utils.drawings import save_drawings, stored_rows
from tests.utils.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


def pipeline_run(settings) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "doodle.cli", "pipeline", "run"],
        env={**os.environ, **settings_env(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_stage(engine, stage: str, status: Status, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recent = runs.list_runs(engine)
        if recent and recent[0].status(stage) is status:
            return
        time.sleep(0.05)
    pytest.fail(f"stage {stage} never reached {status}")


def test_pipeline_fails_cleanly_when_the_database_stops_and_the_next_run_succeeds(
    tmp_path, postgresql_url, quickdraw_test
):
    direct = runs.connect(postgresql_url)
    runs.init_db(direct)
    url = make_url(postgresql_url)
    proxy = TcpProxy((url.host, url.port)).start()
    through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    settings = settings_under(tmp_path / "var", database_url=through_proxy, min_new_images=20)
    configure_mlflow(settings)
    bootstrap(settings.model_name, settings.model_alias)
    banana = quickdraw_test.categories.index("banana")
    expected = save_drawings(
        settings.img_data_location, quickdraw_test.images[quickdraw_test.labels == banana][:40], "crescent"
    )

    first = pipeline_run(settings)
    try:
        wait_for_stage(direct, "retrain", Status.RUNNING)  # retrain: drawings are converted, no model made yet
        proxy.cut()
        _, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 1
    assert "run store unavailable" in stderr
    assert "Traceback" not in stderr
    (run,) = runs.list_runs(direct)
    assert [run.status(stage) for stage in STAGES[:5]] == ["complete"] * 4 + ["running"]  # what it could record

    proxy.start()  # the database is back
    second = pipeline_run(settings)
    stdout, stderr = second.communicate(timeout=900)
    assert second.returncode == 0, stderr[-2000:]
    assert "interrupted run left converted drawings untrained" in stdout
    rerun, interrupted = runs.list_runs(direct)
    assert interrupted.status("retrain") == "failed"
    assert "interrupted during stage retrain" in interrupted.message
    assert [rerun.status(stage) for stage in STAGES] == ["complete"] * 7
    assert sorted(stored_rows(settings.data_dir)) == sorted(row.tobytes() for row in expected)  # each once
    assert list_drawings(settings.img_data_location) == {}
    proxy.cut()
    direct.dispose()
