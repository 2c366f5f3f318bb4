"""Network and training hyper-parameters, apart from the torch code so the CLI can list them without importing torch."""

from dataclasses import asdict, dataclass
from typing import Any

ARCHITECTURES = ("cnn", "resnet18", "resnet50")


@dataclass
class NetConfig:
    """What rebuilds a network (doodle.model.net.DoodleNet); saved with its weights."""

    arch: str = "cnn"  # one of ARCHITECTURES
    num_classes: int = 21
    width: int = 24  # channels of the first stage
    feature_dim: int = 256  # CNN only; ResNets use their last stage's width
    dropout: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainConfig:
    arch: str = NetConfig.arch  # the network's own defaults
    width: int = NetConfig.width
    epochs: int = 40
    batch_size: int = 256
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0  # fixes which rows are val and test
    seed: int = 0  # weights init, shuffling and augmentation
    limit_per_class: int | None = None
    extra_data: str | None = None  # folder of <category>.npy: all its rows join the training split only
    replay_train_per_class: int = 240  # replay drawings shipped in the checkpoint (at most 300 per class)
    replay_val_per_class: int = 60
    teacher: str | None = None  # checkpoint to distil from (same categories)
    distill_weight: float = 0.8  # share of the teacher's soft targets in the loss
    distill_temperature: float = 2.0
