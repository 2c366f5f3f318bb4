from datetime import UTC, datetime, timedelta

import pytest

from doodle.pipeline import runs
from doodle.pipeline.runs import Run, RunPublic, RunStoreUnavailableError, StageRecord
from doodle.pipeline.stages import STAGES, Status

UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def a_run(records: dict[str, StageRecord], run_id: int = 1) -> Run:
    """A run whose stages not in `records` are waiting."""
    waiting = StageRecord(Status.WAITING, None, None)
    return Run(run_id, START, {stage: records.get(stage, waiting) for stage in STAGES}, None)


def done(stage_start_s: float, stage_end_s: float) -> StageRecord:
    return StageRecord(
        Status.COMPLETE, START + timedelta(seconds=stage_start_s), START + timedelta(seconds=stage_end_s)
    )


def statuses(engine, run_id: int) -> list[Status]:
    (run,) = [r for r in runs.list_runs(engine) if r.run_id == run_id]
    return [run.status(stage) for stage in STAGES]


def test_run_seconds_needs_a_start_and_a_later_end():
    run = a_run(
        {
            "scan": done(1, 3.5),
            "merge": StageRecord(Status.RUNNING, START, None),
            "convert": StageRecord(Status.FAILED, START + timedelta(seconds=9), START),
        }
    )
    assert run.seconds("scan") == 2.5
    assert run.seconds("merge") is None
    assert run.seconds("convert") is None  # a clock that went backwards
    assert run.seconds("clean") is None


def test_last_success_end_is_the_newest_complete_run_s_last_end():
    complete = a_run({stage: done(n, n + 1) for n, stage in enumerate(STAGES)}, run_id=1)
    failed = a_run({"scan": done(0, 1), "merge": StageRecord(Status.FAILED, START, START)}, run_id=2)
    assert runs.last_success_end([failed, complete]) == complete.ended("clean")
    assert runs.last_success_end([failed]) is None
    assert runs.last_success_end([]) is None


def test_run_public_has_every_column_of_the_table_and_validates_as_run_public():
    public = a_run({"scan": done(0, 1)}).public()
    assert set(public) == {column.name for column in runs.pipeline_runs.columns}
    assert set(public) == set(RunPublic.model_fields)
    checked = RunPublic.model_validate(public)
    assert checked.model_dump() == public


@pytest.mark.integration
def test_create_run_starts_with_every_stage_waiting(engine):
    run_id = runs.create_run(engine)
    (run,) = runs.list_runs(engine)
    assert run.run_id == run_id and run.start_time.tzinfo is not None
    assert statuses(engine, run_id) == [Status.WAITING] * 7
    assert run.message is None


@pytest.mark.integration
def test_update_stage_stamps_start_and_end(engine):
    run_id = runs.create_run(engine)
    runs.update_stage(engine, run_id, "scan", Status.RUNNING)
    runs.update_stage(engine, run_id, "scan", Status.COMPLETE)
    (run,) = runs.list_runs(engine)
    assert run.status("scan") is Status.COMPLETE
    assert run.start_time <= run.started("scan") <= run.ended("scan")
    assert run.seconds("scan") >= 0


@pytest.mark.integration
def test_set_not_triggered_marks_stages_2_to_7(engine):
    run_id = runs.create_run(engine)
    runs.update_stage(engine, run_id, "scan", Status.COMPLETE)
    runs.set_not_triggered(engine, run_id)
    assert statuses(engine, run_id) == [Status.COMPLETE] + [Status.NOT_TRIGGERED] * 6


@pytest.mark.integration
def test_mark_from_fails_stage_and_later_ones_with_message(engine):
    run_id = runs.create_run(engine)
    runs.mark_from(engine, run_id, "version", Status.FAILED, "version: dvc failed")
    assert statuses(engine, run_id) == [Status.WAITING] * 3 + [Status.FAILED] * 4
    assert runs.list_runs(engine)[0].message == "version: dvc failed"


@pytest.mark.integration
def test_list_runs_is_newest_first(engine):
    ids = [runs.create_run(engine) for _ in range(3)]
    assert [r.run_id for r in runs.list_runs(engine)] == sorted(ids, reverse=True)
    assert len(runs.list_runs(engine, limit=2)) == 2


@pytest.mark.integration
def test_list_runs_before_the_table_exists_is_empty(sqlite_url):
    assert runs.list_runs(runs.connect(sqlite_url)) == []


@pytest.mark.integration
def test_unreachable_store_raises_run_store_unavailable():
    engine = runs.connect(UNREACHABLE_URL, connect_timeout_s=1)
    with pytest.raises(RunStoreUnavailableError, match=r"^run store unavailable: could not create a run \(") as error:
        runs.create_run(engine)
    assert error.value.detail
    with pytest.raises(RunStoreUnavailableError, match="could not read pipeline runs"):
        runs.list_runs(engine)
    with pytest.raises(RunStoreUnavailableError):
        runs.check(engine)
