"""Retrain the head on frozen-backbone features, with a replay bank against forgetting.

A checkpoint may carry a replay bank: backbone features of a per-class sample of
the data its model was trained on (float16 (n, d) with labels and a train/val
flag). With the backbone frozen those features stay valid, so an install with no
Quick Draw images can still replay the old classes.
"""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from doodle.model.data import to_tensor
from doodle.model.net import BasicBlock, Bottleneck, DoodleNet, eval_mode

logger = logging.getLogger(__name__)

TRAIN, VAL = 0, 1
WEIGHTED_LAYERS = (nn.Conv2d, nn.Linear, BasicBlock, Bottleneck)  # what `unfreeze` counts


@dataclass
class FeatureSet:
    features: np.ndarray  # float32 (n, d)
    labels: np.ndarray  # int64 (n,)

    @staticmethod
    def concat(parts: list["FeatureSet"]) -> "FeatureSet":
        parts = [p for p in parts if len(p.labels)]
        if not parts:
            raise ValueError("no features to concatenate")
        return FeatureSet(np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts]))


@dataclass
class HeadConfig:
    epochs: int = 300  # full-batch passes over the features
    lr: float = 0.01
    weight_decay: float = 1e-4
    old_class_weight: float = 2.0  # loss weight of old classes vs new ones: guards against forgetting
    tail_lr_scale: float = 0.1  # unfrozen backbone layers learn this much slower than the head
    seed: int = 0


@torch.no_grad()
def extract_features(net: DoodleNet, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """uint8 (n, 784) -> float32 (n, d) backbone features, computed in eval mode."""
    with eval_mode(net):
        chunks = [
            net.backbone(to_tensor(images[start : start + batch_size])).numpy()
            for start in range(0, len(images), batch_size)
        ]
    return np.concatenate(chunks) if chunks else np.zeros((0, net.head.in_features), np.float32)


def build_bank(net: DoodleNet, images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> dict[str, torch.Tensor]:
    """A replay bank from already sampled images; `split` marks TRAIN or VAL rows."""
    return {
        "features": torch.from_numpy(extract_features(net, images)).half(),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "split": torch.from_numpy(split.astype(np.uint8)),
    }


def bank_part(bank: dict[str, torch.Tensor], split: int) -> FeatureSet:
    keep = bank["split"].numpy() == split
    return FeatureSet(bank["features"].float().numpy()[keep], bank["labels"].numpy()[keep])


def split_backbone(net: DoodleNet, unfreeze: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(frozen prefix, trainable tail) of the backbone; the tail holds its last `unfreeze` weighted layers.

    Both share their modules with `net`, so training the tail trains `net`.
    """
    layers = list(net.backbone)
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, WEIGHTED_LAYERS)]
    if not 1 <= unfreeze <= len(weighted):
        raise ValueError(f"unfreeze must be between 1 and {len(weighted)} for this network, got {unfreeze}")
    cut = weighted[-unfreeze]
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])


def train_head(
    head: nn.Linear, train: FeatureSet, config: HeadConfig, old_classes: int = 0, tail: nn.Module | None = None
) -> list[float]:
    """Full-batch AdamW with class-balanced loss; returns the loss per epoch.

    With `old_classes` > 0 the first rows stay exactly as they are and only the
    rows of the new classes learn, so old classes can only lose drawings that
    the new rows claim, and the weighted loss keeps such claims rare.
    With a `tail` (unfrozen backbone layers) `train.features` are the frozen
    prefix's outputs, and the tail learns with the head (batch norm stays fixed).
    """
    torch.manual_seed(config.seed)
    features, labels = torch.from_numpy(train.features), torch.from_numpy(train.labels)
    counts = torch.bincount(labels, minlength=head.out_features).float()
    weights = torch.where(counts > 0, counts.sum() / (counts * (counts > 0).sum()).clamp(min=1), 0.0)
    weights[:old_classes] *= config.old_class_weight
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    with torch.no_grad():
        frozen = head.weight[:old_classes].clone(), head.bias[:old_classes].clone()
    groups: list[dict[str, Any]] = [{"params": head.parameters()}]
    model: nn.Module = head
    if tail is not None:
        tail.eval()
        groups.append({"params": tail.parameters(), "lr": config.lr * config.tail_lr_scale})
        model = nn.Sequential(tail, head)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    losses = []
    for _ in tqdm(range(config.epochs), desc="head", leave=False):
        loss = loss_fn(model(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():  # undo any change to the frozen rows, weight decay included
            head.weight[:old_classes], head.bias[:old_classes] = frozen
        losses.append(loss.item())
    return losses


@torch.no_grad()
def head_accuracy(head: nn.Linear, data: FeatureSet, classes: list[int]) -> float | None:
    """Top-1 of `head` on the rows whose label is in `classes`; None when there are none."""
    keep = np.isin(data.labels, classes)
    if not keep.any():
        return None
    predicted = head(torch.from_numpy(data.features[keep])).argmax(dim=1).numpy()
    return float((predicted == data.labels[keep]).mean())
