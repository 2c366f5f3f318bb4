from dataclasses import asdict, fields

import pytest

from doodle.config import settings_under
from doodle.model.net import load_checkpoint
from doodle.model.registry import bundled_checkpoint
from doodle.pipeline.stages.retrain import TRAIN, VAL, SourceConfig, base_split, tail_replay_dir


def test_source_config_reads_the_checkpoint_train_config():
    saved = {
        "val_fraction": 0.25,
        "test_fraction": 0.05,
        "split_seed": 7,
        "replay_train_per_class": 11,
        "replay_val_per_class": 3,
        "epochs": 40,
    }
    source = SourceConfig.of({"train_config": saved})
    assert asdict(source) == {item.name: saved[item.name] for item in fields(SourceConfig)}
    assert (source.bank_rows(TRAIN), source.bank_rows(VAL)) == (11, 3)


def test_source_config_without_train_config_falls_back_to_the_defaults():
    assert SourceConfig.of({}) == SourceConfig()
    assert SourceConfig.of({"train_config": {"split_seed": 3}}) == SourceConfig(split_seed=3)


def test_source_config_of_the_bundled_model_matches_its_training():
    _, _, meta = load_checkpoint(bundled_checkpoint())
    source = SourceConfig.of(meta)
    assert asdict(source) == {item.name: meta["train_config"][item.name] for item in fields(SourceConfig)}


def test_base_split_follows_the_source_split():
    narrow, wide = SourceConfig(val_fraction=0.1), SourceConfig(val_fraction=0.3)
    assert len(base_split(1000, VAL, narrow)) == 100 and len(base_split(1000, VAL, wide)) == 300
    assert set(base_split(1000, VAL, narrow)).isdisjoint(base_split(1000, TRAIN, narrow))
    assert list(base_split(1000, TRAIN, SourceConfig(split_seed=1))) != list(base_split(1000, TRAIN, narrow))


def test_tail_replay_dir_needs_replay_data_only_when_unfreezing(tmp_path):
    assert tail_replay_dir(settings_under(tmp_path)) is None
    assert tail_replay_dir(settings_under(tmp_path, retrain_unfreeze=1, replay_data_dir=tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="RETRAIN_UNFREEZE needs REPLAY_DATA_DIR"):
        tail_replay_dir(settings_under(tmp_path, retrain_unfreeze=1))
