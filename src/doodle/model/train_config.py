"""Training hyper-parameters, apart from the training code so the CLI can list them without importing torch."""

from dataclasses import dataclass


@dataclass
class TrainConfig:
    arch: str = "cnn"  # cnn | resnet18 | resnet50
    width: int = 24  # channels of the first stage
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
    replay_train_per_class: int = 160  # replay bank shipped in the checkpoint
    replay_val_per_class: int = 60
    teacher: str | None = None  # checkpoint to distil from (same categories)
    distill_weight: float = 0.8  # share of the teacher's soft targets in the loss
    distill_temperature: float = 2.0
