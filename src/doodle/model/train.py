"""Train a DoodleNet on a folder of `<category>.npy` files, logging to MLflow."""

import copy
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from doodle.model.data import Dataset, augment, load_dataset, to_tensor, with_extra_rows
from doodle.model.evaluate import EvalReport, evaluate, plot_confusion
from doodle.model.finetune import TRAIN, VAL
from doodle.model.net import DoodleNet, fuse_for_inference, load_checkpoint, save_checkpoint
from doodle.model.train_config import NetConfig, TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    val: EvalReport
    test: EvalReport | None


def _loader(
    dataset: Dataset, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(dataset), generator=generator).numpy()
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        yield to_tensor(dataset.images[picked]), torch.from_numpy(dataset.labels[picked])


def sample_per_class(dataset: Dataset, per_class: int, seed: int) -> np.ndarray:
    """Indices of at most `per_class` random rows of each class."""
    rng = np.random.default_rng(seed)
    picks = [
        rng.permutation(np.flatnonzero(dataset.labels == label))[:per_class] for label in range(len(dataset.categories))
    ]
    return np.sort(np.concatenate(picks))


def replay_set(train_set: Dataset, val_set: Dataset, config: TrainConfig) -> dict[str, torch.Tensor]:
    """A per-class sample of the train and val drawings, shipped in the checkpoint for retraining."""
    train_rows = sample_per_class(train_set, config.replay_train_per_class, config.seed)
    val_rows = sample_per_class(val_set, config.replay_val_per_class, config.seed)
    images = np.concatenate([train_set.images[train_rows], val_set.images[val_rows]])
    labels = np.concatenate([train_set.labels[train_rows], val_set.labels[val_rows]])
    split = np.concatenate([np.full(len(train_rows), TRAIN), np.full(len(val_rows), VAL)])
    return {
        "images": torch.from_numpy(images),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "split": torch.from_numpy(split.astype(np.uint8)),
    }


def load_teacher(path: str, categories: list[str]) -> DoodleNet:
    """A trained network whose soft targets the new one learns from."""
    teacher, teacher_categories, _ = load_checkpoint(path)
    if teacher_categories != categories:
        raise ValueError(f"teacher {path} knows {teacher_categories}, the data has {categories}")
    return fuse_for_inference(teacher)


@torch.no_grad()
def soft_targets(teacher: DoodleNet, images: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's probabilities at `temperature`, averaged over each image and its mirror."""
    images = images.contiguous(memory_format=torch.channels_last)
    logits = torch.stack([teacher(images), teacher(images.flip(3))])
    return torch.softmax(logits / temperature, dim=2).mean(dim=0)


def distill_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence to the teacher's soft targets, scaled to keep gradients comparable across temperatures."""
    log_proba = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_proba, targets, reduction="batchmean") * temperature**2


def train(config: TrainConfig, data_dir: Path, checkpoint_path: Path) -> TrainResult:
    """Train, keep the (latest) epoch with the best validation top-1, save and log it."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    split: dict[str, Any] = dict(
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.split_seed,
        limit_per_class=config.limit_per_class,
    )
    train_set = load_dataset(data_dir, "train", **split)
    val_set = load_dataset(data_dir, "val", categories=train_set.categories, **split)
    replay = replay_set(train_set, val_set, config)  # from the data set's own splits, not the extra rows
    if config.extra_data:
        train_set = with_extra_rows(train_set, Path(config.extra_data))

    teacher = load_teacher(config.teacher, train_set.categories) if config.teacher else None
    net = DoodleNet(NetConfig(arch=config.arch, num_classes=len(train_set.categories), width=config.width))
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    mlflow.log_params({**asdict(config), "classes": len(train_set.categories), "train_rows": len(train_set)})
    logger.info("training arch=%s classes=%d rows=%d", config.arch, len(train_set.categories), len(train_set))

    best_state, best_epoch, best_val = None, -1, None
    for epoch in range(config.epochs):
        net.train()
        started, total_loss, seen = time.perf_counter(), 0.0, 0
        batches = tqdm(
            _loader(train_set, config.batch_size, generator),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=False,
        )
        for images, labels in batches:
            if config.augment:
                images = augment(images, generator)
            logits = net(images)
            loss = loss_fn(logits, labels)
            if teacher is not None:
                targets = soft_targets(teacher, images, config.distill_temperature)
                kd = distill_loss(logits, targets, config.distill_temperature)
                loss = (1 - config.distill_weight) * loss + config.distill_weight * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(labels)
            seen += len(labels)
            batches.set_postfix(loss=f"{total_loss / seen:.3f}")
        val = evaluate(net, val_set)
        mlflow.log_metrics(
            {"train_loss": total_loss / seen, **val.metrics("val_"), "epoch_seconds": time.perf_counter() - started},
            step=epoch,
        )
        logger.info("epoch done epoch=%d loss=%.4f val_top1=%.4f", epoch + 1, total_loss / seen, val.top1)
        if best_val is None or val.top1 >= best_val.top1:  # on a tie, the later epoch
            best_state, best_epoch, best_val = copy.deepcopy(net.state_dict()), epoch, val

    if best_state is None or best_val is None:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    net.load_state_dict(best_state)
    test = None
    if config.test_fraction > 0:
        test_set = load_dataset(data_dir, "test", categories=train_set.categories, **split)
        test = evaluate(net, test_set)
        mlflow.log_metrics(test.metrics("test_"))
        mlflow.log_figure(plot_confusion(test, test_set.categories), "confusion_test.png")
    checkpoint_path = Path(checkpoint_path)
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        checkpoint_path,
        net,
        train_set.categories,
        replay=replay,
        train_config=asdict(config),
        val_top1=best_val.top1,
        test_top1=test.top1 if test else None,
        test_top3=test.top3 if test else None,
    )
    mlflow.log_metrics({"best_epoch": best_epoch, **best_val.metrics("best_val_")})
    mlflow.log_artifact(str(checkpoint_path), artifact_path="checkpoint")
    return TrainResult(checkpoint_path, best_epoch, best_val, test)
