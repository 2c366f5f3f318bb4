import pytest

from doodle.pipeline.stages import STAGES, stage_number


def test_stage_number_counts_from_one_in_stage_order():
    assert [stage_number(stage) for stage in STAGES] == list(range(1, len(STAGES) + 1))


def test_stage_number_rejects_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage 'deploy'"):
        stage_number("deploy")
