import numpy as np
import torch
from torch import nn

from doodle.model.evaluate import top1_among
from doodle.model.finetune import FeatureSet, HeadConfig, train_head


def blobs(centres: np.ndarray, per_class: int, seed: int) -> FeatureSet:
    rng = np.random.default_rng(seed)
    features = np.concatenate([c + rng.normal(0, 0.3, (per_class, len(c))) for c in centres]).astype(np.float32)
    return FeatureSet(features, np.repeat(np.arange(len(centres)), per_class))


@torch.no_grad()
def head_accuracy(head: nn.Linear, data: FeatureSet, classes: list[int]) -> float | None:
    return top1_among(head(torch.from_numpy(data.features)).argmax(dim=1).numpy(), data.labels, classes)


def test_train_head_learns_new_rows_and_keeps_old_rows_exact():
    torch.manual_seed(0)
    centres = np.eye(4, 8) * 3
    head = nn.Linear(8, 4)
    train_head(head, blobs(centres[:2], 40, 2), HeadConfig(epochs=100))  # a head that knows the old classes
    before = head.weight[:2].detach().clone(), head.bias[:2].detach().clone()
    train_head(head, blobs(centres, 40, 0), HeadConfig(), old_classes=2)
    assert torch.equal(head.weight[:2], before[0]) and torch.equal(head.bias[:2], before[1])
    assert head_accuracy(head, blobs(centres, 20, 1), [2, 3]) > 0.9
    assert head_accuracy(head, blobs(centres, 20, 1), [0, 1]) > 0.9


def test_train_head_without_new_classes_trains_every_row():
    centres = np.eye(3, 6) * 3
    head = nn.Linear(6, 3)
    losses = train_head(head, blobs(centres, 40, 0), HeadConfig(epochs=100))
    assert losses[-1] < losses[0]
    assert head_accuracy(head, blobs(centres, 20, 1), [0, 1, 2]) > 0.95
    assert head_accuracy(head, blobs(centres, 20, 1), [7]) is None
