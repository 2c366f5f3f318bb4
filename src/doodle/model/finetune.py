"""Teach a trained network new classes: new head rows on frozen features, or a fine-tuned tail.

Both work from drawings: the users' new ones, plus the replay drawings that a checkpoint
carries for every class it knows (see doodle.model.train.replay_set), so an install with no
Quick Draw data still replays the old classes.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from doodle.model.data import augment, to_tensor
from doodle.model.net import BasicBlock, Bottleneck, DoodleNet, eval_mode

logger = logging.getLogger(__name__)

TRAIN, VAL = 0, 1
WEIGHTED_LAYERS = (nn.Conv2d, nn.Linear, BasicBlock, Bottleneck)  # what `unfreeze` counts


@dataclass
class FeatureSet:
    features: np.ndarray  # float32 (n, d)
    labels: np.ndarray  # int64 (n,)


@dataclass
class HeadConfig:
    epochs: int = 300  # full-batch passes over the features
    lr: float = 0.01
    weight_decay: float = 1e-4
    old_class_weight: float = 2.0  # loss weight of old classes vs new ones: guards against forgetting
    seed: int = 0


@dataclass
class TailConfig:
    """Fine-tuning the backbone's last layers with the head, on augmented drawings (see `finetune_tail`)."""

    steps: int = 350  # batches: a fixed count keeps a run's time flat as data grows
    batch_size: int = 128
    reuse: int = 3  # times each pooled drawing is trained on: the pool holds steps * batch_size / reuse
    lr: float = 2e-3  # peak of the one-cycle schedule; the head's is 10x
    weight_decay: float = 1e-4
    distill_weight: float = 1.0  # learning without forgetting: old-class logits follow the previous model
    distill_temperature: float = 2.0
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


def train_head(head: nn.Linear, train: FeatureSet, config: HeadConfig, old_classes: int = 0) -> list[float]:
    """Full-batch AdamW with class-balanced loss; returns the loss per epoch.

    With `old_classes` > 0 the first rows stay exactly as they are and only the
    rows of the new classes learn, so old classes can only lose drawings that
    the new rows claim, and the weighted loss keeps such claims rare.
    """
    torch.manual_seed(config.seed)
    features, labels = torch.from_numpy(train.features), torch.from_numpy(train.labels)
    counts = torch.bincount(labels, minlength=head.out_features).float()
    weights = torch.where(counts > 0, counts.sum() / (counts * (counts > 0).sum()).clamp(min=1), 0.0)
    weights[:old_classes] *= config.old_class_weight
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    with torch.no_grad():
        frozen = head.weight[:old_classes].clone(), head.bias[:old_classes].clone()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    losses = []
    for _ in tqdm(range(config.epochs), desc="head", leave=False):
        loss = loss_fn(head(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():  # undo any change to the frozen rows, weight decay included
            head.weight[:old_classes], head.bias[:old_classes] = frozen
        losses.append(loss.item())
    return losses


@torch.no_grad()
def imprint(net: DoodleNet, images: np.ndarray, label: int) -> None:
    """Start a new head row at the mean direction of its drawings' features, with the old rows' typical norm."""
    centre = torch.from_numpy(extract_features(net, images)).mean(dim=0)
    old_rows = net.head.weight[:label]
    net.head.weight[label] = centre / centre.norm() * old_rows.norm(dim=1).mean()
    net.head.bias[label] = net.head.bias[:label].mean()


def _train_tail_mode(tail: nn.Module) -> None:
    """Dropout on, batch norm frozen: a few hundred drawings must not move its running statistics."""
    tail.train()
    for module in tail.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.eval()


def finetune_tail(
    net: DoodleNet, teacher: DoodleNet, images: np.ndarray, labels: np.ndarray, unfreeze: int, config: TailConfig
) -> list[float]:
    """Train the backbone's last `unfreeze` layers and the whole head; returns the loss per step.

    `teacher` is the previous model fused for inference (see fuse_for_inference). Its frozen
    prefix computes what the net's would, so both run once per drawing, ahead of training: a pool
    of class-balanced, augmented drawings holds the prefix's output and the teacher's answers, and
    each step trains on a batch of the pool. The old classes' logits are distilled towards the
    teacher's, which keeps what the old classes' features meant.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    _, tail = split_backbone(net, unfreeze)
    prefix, teacher_tail = split_backbone(teacher, unfreeze)  # the prefix is frozen: the teacher's is the net's
    old_classes = teacher.head.out_features
    temperature = config.distill_temperature
    draw = 1.0 / np.bincount(labels)[labels]
    picked = rng.choice(len(labels), config.steps * config.batch_size // config.reuse, p=draw / draw.sum())
    inputs, targets = [], []
    with torch.no_grad():
        for chunk in tqdm(np.array_split(picked, math.ceil(len(picked) / 512)), desc="pool", leave=False):
            features = prefix(augment(to_tensor(images[chunk]), generator))
            targets.append(torch.softmax(teacher.head(teacher_tail(features)) / temperature, dim=1))
            inputs.append(features.half())  # half the memory; the tail computes in float32
    pool_inputs, pool_targets, pool_labels = torch.cat(inputs), torch.cat(targets), torch.from_numpy(labels[picked])
    groups = [{"params": tail.parameters(), "lr": config.lr}, {"params": net.head.parameters(), "lr": config.lr * 10}]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[config.lr, config.lr * 10], total_steps=config.steps, pct_start=0.15
    )
    epochs = [torch.randperm(len(picked), generator=generator) for _ in range(config.reuse)]
    batches = torch.cat(epochs).split(config.batch_size)
    losses = []
    _train_tail_mode(tail)
    for batch in tqdm(batches[: config.steps], desc="fine-tune", leave=False):
        logits = net.head(tail(pool_inputs[batch].float()))
        loss = F.cross_entropy(logits, pool_labels[batch])
        old_logits = F.log_softmax(logits[:, :old_classes] / temperature, dim=1)
        distill = F.kl_div(old_logits, pool_targets[batch], reduction="batchmean") * temperature**2
        loss = loss + config.distill_weight * distill
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    net.eval()
    return losses
