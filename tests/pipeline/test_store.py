import pytest

from doodle.pipeline import store
from doodle.pipeline.store import STAGES, Status

pytestmark = pytest.mark.integration


def statuses(engine, run_id):
    (run,) = [r for r in store.list_runs(engine) if r["run_id"] == run_id]
    return [run[f"stage_{n}_status"] for n in range(1, 8)]


def test_create_run_starts_with_every_stage_waiting(engine):
    run_id = store.create_run(engine)
    (run,) = store.list_runs(engine)
    assert run["run_id"] == run_id and run["start_time"] is not None
    assert statuses(engine, run_id) == ["waiting"] * 7
    assert set(run) >= {f"stage_{n}_{field}" for n in range(1, 8) for field in ("status", "start", "end")}


def test_update_stage_stamps_start_and_end(engine):
    run_id = store.create_run(engine)
    store.update_stage(engine, run_id, "scan", Status.RUNNING)
    store.update_stage(engine, run_id, "scan", Status.COMPLETE)
    (run,) = store.list_runs(engine)
    assert run["stage_1_status"] == "complete"
    assert run["stage_1_start"] <= run["stage_1_end"]


def test_set_not_triggered_marks_stages_2_to_7(engine):
    run_id = store.create_run(engine)
    store.update_stage(engine, run_id, "scan", Status.COMPLETE)
    store.set_not_triggered(engine, run_id)
    assert statuses(engine, run_id) == ["complete"] + ["not_triggered"] * 6


def test_mark_from_fails_stage_and_later_ones_with_message(engine):
    run_id = store.create_run(engine)
    store.mark_from(engine, run_id, "version", Status.FAILED, "version: dvc failed")
    assert statuses(engine, run_id) == ["waiting"] * 3 + ["failed"] * 4
    assert store.list_runs(engine)[0]["message"] == "version: dvc failed"


def test_list_runs_is_newest_first(engine):
    ids = [store.create_run(engine) for _ in range(3)]
    assert [r["run_id"] for r in store.list_runs(engine)] == sorted(ids, reverse=True)
    assert len(store.list_runs(engine, limit=2)) == 2


def test_stage_number_rejects_unknown_stage():
    assert [store.stage_number(s) for s in STAGES] == list(range(1, 8))
    with pytest.raises(ValueError, match="unknown stage"):
        store.stage_number("deploy")
