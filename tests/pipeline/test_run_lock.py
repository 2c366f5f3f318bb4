"""The run lock of a PostgreSQL run store, taken by real `doodle pipeline run` and `watch` processes on two "machines".

Each machine has its own local state, PIPELINE_DIR included, so only the shared run store can stop them.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress

import pytest

from doodle.config import settings_env, settings_under
from doodle.pipeline import runs
from doodle.pipeline.orchestrator import PipelineBusyError, run_lock
from doodle.pipeline.stages import Status
from tests.utils.drawings import save_drawings, synthetic_images

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgresql_url):
    engine = runs.connect(postgresql_url)
    runs.init_db(engine)
    yield engine
    engine.dispose()


def machine(tmp_path, name, database_url):
    """Settings of one machine: everything local under its own folder, the run store shared."""
    return settings_under(tmp_path / name, database_url=database_url, min_new_images=1)


def pipeline_run(settings) -> subprocess.Popen:
    """`doodle pipeline run` in its own process group, so a test can kill it with its stage."""
    return subprocess.Popen(
        [sys.executable, "-m", "doodle.cli", "pipeline", "run"],
        env={**os.environ, **settings_env(settings)},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(process) -> None:
    """SIGKILL the process and its stage, if still there."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_a_run(engine, process) -> None:
    """Until a run is recorded: its process holds the lock from then on."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if runs.list_runs(engine):
            return
        time.sleep(0.05)
    pytest.fail(f"no run recorded; pipeline run exited with {process.poll()}")


def holder_name(process) -> str:
    """How a refusal names the run holding the lock."""
    return f"doodle pipeline on {socket.gethostname()} pid {process.pid} at "


def takes_the_lock(settings, engine) -> bool:
    try:
        with run_lock(settings, engine):
            return True
    except PipelineBusyError:
        return False


def test_a_second_machine_is_refused_while_the_first_runs_and_runs_after_it(tmp_path, postgresql_url, store):
    first_machine = machine(tmp_path, "a", postgresql_url)
    second_machine = machine(tmp_path, "b", postgresql_url)  # no drawings: its run ends after scan
    save_drawings(first_machine.img_data_location, synthetic_images(3), "cat")

    first = pipeline_run(first_machine)
    try:
        wait_for_a_run(store, first)
        refused = pipeline_run(second_machine)
        _, refusal = refused.communicate(timeout=120)
        assert first.poll() is None, "the first run ended before the second tried: nothing was tested"
        _, stderr = first.communicate(timeout=300)
    finally:
        kill(first)
    assert refused.returncode == 2, refusal
    assert "refused: another pipeline run is active" in refusal
    assert holder_name(first) in refusal
    assert first.returncode == 1, stderr[-2000:]  # retrain fails: no model is registered here
    (first_run,) = runs.list_runs(store)  # the refused machine recorded nothing

    second = pipeline_run(second_machine)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-2000:]
    second_run, _ = runs.list_runs(store)
    assert second_run.status("scan") is Status.COMPLETE
    assert second_run.start_time >= first_run.finished()


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path, postgresql_url, store):
    holder_machine = machine(tmp_path, "a", postgresql_url)
    taker_machine = machine(tmp_path, "b", postgresql_url)
    save_drawings(holder_machine.img_data_location, synthetic_images(3), "cat")

    holder = pipeline_run(holder_machine)
    try:
        wait_for_a_run(store, holder)
        with pytest.raises(PipelineBusyError, match=holder_name(holder)):
            with run_lock(taker_machine, store):
                pass
    finally:
        kill(holder)

    deadline = time.monotonic() + 10  # PostgreSQL ends a dead client's session within moments
    while not takes_the_lock(taker_machine, store):
        assert time.monotonic() < deadline, "the killed holder's lock was never released"
        time.sleep(0.1)
    elsewhere = runs.connect(postgresql_url)
    assert takes_the_lock(holder_machine, elsewhere), "the taker did not release the lock when done"
    elsewhere.dispose()


def test_an_unreachable_run_store_fails_the_run_cleanly_at_the_lock(tmp_path):
    settings = machine(tmp_path, "a", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    save_drawings(settings.img_data_location, synthetic_images(3), "cat")
    process = pipeline_run(settings)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "failed: run store unavailable: could not take the run lock (OperationalError)" in stderr
    assert "Traceback" not in stderr


def pipeline_watch(settings) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "doodle.cli", "pipeline", "watch", "--interval", "0.2"],
        env={**os.environ, **settings_env(settings)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_two_watchers_sharing_the_drawings_run_the_pipeline_once(tmp_path, postgresql_url, store):
    first_machine = machine(tmp_path, "a", postgresql_url)
    second_machine = machine(tmp_path, "b", postgresql_url).model_copy(
        update={"img_data_location": first_machine.img_data_location}  # one drawings volume, as in compose
    )
    save_drawings(first_machine.img_data_location, synthetic_images(3), "cat")

    watchers = [pipeline_watch(first_machine), pipeline_watch(second_machine)]
    try:
        deadline = time.monotonic() + 120
        while not ((found := runs.list_runs(store)) and found[0].status("retrain") is Status.FAILED):
            assert time.monotonic() < deadline, "no watcher finished a run"
            time.sleep(0.2)
        time.sleep(2)  # both keep watching: the drawings are converted, nothing waits
    finally:
        for watcher in watchers:
            kill(watcher)

    assert len(runs.list_runs(store)) == 1, "both watchers ran the pipeline on the same drawings"
    logs = [(settings.log_dir / "pipeline.log").read_text() for settings in (first_machine, second_machine)]
    assert any("watch skipped: another pipeline run is active" in log for log in logs), logs
