from dataclasses import asdict, fields

import numpy as np
import pytest
import torch

from doodle.imaging import normalize_drawing
from doodle.model.data import load_category
from doodle.model.evaluate import predict_proba
from doodle.model.net import load_checkpoint, load_replay
from doodle.model.registry import bundled_checkpoint
from doodle.pipeline.stages.retrain import TRAIN, VAL, Drawings, SourceConfig, gather, retrain

NEW_CATEGORIES = ["car", "guitar", "rabbit"]
SAVED_PER_CLASS = 100  # what users saved of each new category; the rest measures it


def test_source_config_reads_the_checkpoint_train_config():
    saved = {"replay_train_per_class": 11, "replay_val_per_class": 3, "epochs": 40}
    source = SourceConfig.of({"train_config": saved})
    assert asdict(source) == {item.name: saved[item.name] for item in fields(SourceConfig)}
    assert (source.replay_rows(TRAIN), source.replay_rows(VAL)) == (11, 3)


def test_source_config_without_train_config_falls_back_to_the_defaults():
    assert SourceConfig.of({}) == SourceConfig()


def test_bundled_model_carries_at_most_300_replay_drawings_per_class_as_its_training_says():
    _, categories, meta = load_checkpoint(bundled_checkpoint())
    source = SourceConfig.of(meta)
    assert asdict(source) == {item.name: meta["train_config"][item.name] for item in fields(SourceConfig)}
    replay = load_replay(bundled_checkpoint())
    assert replay["images"].dtype == torch.uint8 and replay["images"].shape[1] == 784
    for split in (TRAIN, VAL):
        counts = np.bincount(replay["labels"][replay["split"] == split].numpy(), minlength=len(categories))
        assert (counts == source.replay_rows(split)).all()
    assert source.replay_train_per_class + source.replay_val_per_class <= 300


def test_gather_splits_user_rows_and_replay_by_split():
    replay = {
        "images": torch.zeros(5, 784, dtype=torch.uint8),
        "labels": torch.tensor([0, 0, 1, 1, 1]),
        "split": torch.tensor([TRAIN, VAL, TRAIN, TRAIN, VAL], dtype=torch.uint8),
    }
    user = {"kite": np.full((10, 784), 7, np.uint8)}
    drawings = gather(replay, ["cat", "dog", "kite"], user)
    assert list(drawings[TRAIN].labels) == [0, 1, 1] + [2] * 8
    assert list(drawings[VAL].labels) == [0, 1, 2, 2]
    assert (drawings[VAL].images[-2:] == 7).all()


def test_gather_without_replay_drawings_replays_only_user_rows():
    features_only = {"features": torch.zeros(2, 8), "labels": torch.zeros(2, dtype=torch.int64)}
    drawings = gather(features_only, ["cat", "kite"], {"kite": np.zeros((10, 784), np.uint8)})
    assert set(drawings[TRAIN].labels) == {1}


def top1(net, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict_proba(net, images).argmax(axis=1) == labels).mean())


@pytest.fixture(scope="module")
def new_drawings(quickdraw_new_dir):
    """(saved, held out) normalised drawings of each new category, by a seeded shuffle."""
    rng = np.random.default_rng(0)
    split = {}
    for category in NEW_CATEGORIES:
        rows = load_category(quickdraw_new_dir / f"{category}.npy")
        rows = rows[rng.permutation(len(rows))[: SAVED_PER_CLASS + 400]]
        rows = np.stack([normalize_drawing(row.reshape(28, 28)).reshape(784) for row in rows])
        split[category] = rows[:SAVED_PER_CLASS], rows[SAVED_PER_CLASS:]
    return split


@pytest.mark.integration
def test_fine_tuned_tail_beats_plain_head_retraining_without_more_forgetting(new_drawings, quickdraw_test):
    """The default recipe against head-only retraining, on the bundled model and real unseen categories."""
    old_images, old_labels = quickdraw_test.images, quickdraw_test.labels
    results = {}
    for unfreeze in (0, 3):
        net, old_categories, meta = load_checkpoint(bundled_checkpoint())
        old_before = top1(net, old_images, old_labels)
        categories = old_categories + NEW_CATEGORIES
        user = {category: saved for category, (saved, _) in new_drawings.items()}
        drawings = gather(load_replay(bundled_checkpoint()), categories, user)
        outcome = retrain(net, old_categories, categories, drawings, SourceConfig.of(meta), unfreeze)
        new_top1 = np.mean(
            [
                top1(net, held_out, np.full(len(held_out), categories.index(c)))
                for c, (_, held_out) in new_drawings.items()
            ]
        )
        results[unfreeze] = new_top1, old_before - top1(net, old_images, old_labels)
        assert isinstance(outcome.replay["images"], torch.Tensor)
        kept = Drawings(outcome.replay["images"].numpy(), outcome.replay["labels"].numpy())
        assert np.bincount(kept.labels).tolist() == [300] * 21 + [100] * 3  # 80 train + 20 val per new class
    (plain_new, plain_drop), (recipe_new, recipe_drop) = results[0], results[3]
    measured = f"new-class top-1 {plain_new:.3f} -> {recipe_new:.3f}, old drop {plain_drop:.4f} -> {recipe_drop:.4f}"
    assert recipe_new >= plain_new + 0.03, measured
    assert recipe_drop <= plain_drop + 0.005, measured  # no more forgetting, within the noise of 5,800 drawings
