"""Stage 5: retrain the production model's head on new data plus a replay sample of the old.

By default the backbone stays frozen and the old classes replay the features
banked with the production model. RETRAIN_UNFREEZE=N also trains the backbone's
last N layers; old classes then replay drawings from REPLAY_DATA_DIR.
"""

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import numpy.typing as npt
import torch

from doodle.config import Settings
from doodle.model.data import load_category, split_indices, to_tensor
from doodle.model.finetune import (
    TRAIN,
    VAL,
    FeatureSet,
    HeadConfig,
    bank_part,
    build_bank,
    extract_features,
    head_accuracy,
    split_backbone,
    train_head,
)
from doodle.model.net import DoodleNet, load_checkpoint, load_replay, save_checkpoint
from doodle.model.registry import configure_mlflow
from doodle.pipeline.ledger import Ledger, Rows, load_ledger, read_rows
from doodle.pipeline.runner import StageContext, StageOutput, stage_main

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2  # of each class's user drawings, fixed by seed: the gate's validation rows
OLD_ROWS_PER_CLASS = 1000  # replay sample of merged user data per class
TAIL_TRAIN_PER_CLASS = 500  # replay images per old class when backbone layers are unfrozen

Bank = dict[str, torch.Tensor]  # a checkpoint's replay bank: features, labels, split (see doodle.model.finetune)
Indices = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SourceConfig:
    """What retraining must know of how the production model was trained: its `train_config`.

    The defaults are the values every checkpoint used before checkpoints kept their train_config.
    """

    val_fraction: float = 0.1  # the base data's split, so old-class replay drawings come from its own splits
    test_fraction: float = 0.1
    split_seed: int = 0
    replay_train_per_class: int = 160  # replay bank rows per class: the candidate's bank keeps the same sizes
    replay_val_per_class: int = 60

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> "SourceConfig":
        """From a checkpoint's meta."""
        saved = meta.get("train_config") or {}
        return cls(**{item.name: saved[item.name] for item in fields(cls) if item.name in saved})

    def bank_rows(self, split: int) -> int:
        return self.replay_train_per_class if split == TRAIN else self.replay_val_per_class


def production_checkpoint(name: str, alias: str) -> Path:
    """Local path of the checkpoint inside the model at `name@alias`."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}"))
    checkpoints = sorted((local / "artifacts").glob("*.pt"))
    if not checkpoints:
        raise RuntimeError(f"models:/{name}@{alias} has no checkpoint artifact")
    return checkpoints[0]


def user_rows(data_dir: Path, category: str, ledger: Ledger, rng: np.random.Generator) -> Rows:
    """New rows in full plus a random replay sample of the merged ones."""
    old = read_rows(data_dir, "old", category, ledger.old.get(category, 0))
    if len(old) > OLD_ROWS_PER_CLASS:
        old = old[np.sort(rng.choice(len(old), OLD_ROWS_PER_CLASS, replace=False))]
    return np.concatenate([old, read_rows(data_dir, "new", category, ledger.new.get(category, 0))])


@dataclass
class Outcome:
    val: FeatureSet  # the candidate's features of the validation rows
    old_top1_production: float | None
    losses: list[float]
    replay: Bank | None


def retrain_head(
    net: DoodleNet,
    old_categories: list[str],
    categories: list[str],
    user: dict[str, Rows],
    bank: Bank | None,
    source: SourceConfig,
    config: HeadConfig,
) -> Outcome:
    """Frozen backbone: train new head rows on features of user data plus the replay bank."""
    new_labels = range(len(old_categories), len(categories))
    if bank is None:
        logger.warning("production model has no replay bank: old classes replay only user data")
    train_parts = [bank_part(bank, TRAIN)] if bank else []
    val_parts = [bank_part(bank, VAL)] if bank else []
    replay_parts: dict[str, list[torch.Tensor]] = {key: [] for key in ("features", "labels", "split")}
    if bank:
        for key, parts in replay_parts.items():
            parts.append(bank[key])
    for category, rows in user.items():
        label = categories.index(category)
        features = extract_features(net, rows)
        for split, part in ((TRAIN, train_parts), (VAL, val_parts)):
            picked = user_split(len(rows), split)
            part.append(FeatureSet(features[picked], np.full(len(picked), label)))
            if label in new_labels:  # the candidate carries replay for its new classes too
                keep = picked[: source.bank_rows(split)]
                replay_parts["features"].append(torch.from_numpy(features[keep]).half())
                replay_parts["labels"].append(torch.full((len(keep),), label, dtype=torch.int64))
                replay_parts["split"].append(torch.full((len(keep),), split, dtype=torch.uint8))
    train, val = FeatureSet.concat(train_parts), FeatureSet.concat(val_parts)
    old_top1_production = head_accuracy(net.head, val, list(range(len(old_categories))))
    net.grow_head(len(categories))
    frozen_rows = len(old_categories) if len(categories) > len(old_categories) else 0
    losses = train_head(net.head, train, config, old_classes=frozen_rows)
    replay = {key: torch.cat(values) for key, values in replay_parts.items()} if replay_parts["labels"] else None
    return Outcome(val, old_top1_production, losses, replay)


def retrain_tail(
    net: DoodleNet,
    old_categories: list[str],
    categories: list[str],
    user: dict[str, Rows],
    replay_dir: Path,
    unfreeze: int,
    source: SourceConfig,
    config: HeadConfig,
) -> Outcome:
    """Unfrozen tail: old classes replay images from `replay_dir`, so the new backbone can be measured."""
    image_parts: dict[int, list[Rows]] = {TRAIN: [], VAL: []}
    label_parts: dict[int, list[Indices]] = {TRAIN: [], VAL: []}
    for label, category in enumerate(old_categories):
        path = replay_dir / f"{category}.npy"
        if not path.exists():
            raise FileNotFoundError(f"unfreezing needs replay drawings of every old category: {path} is missing")
        rows = load_category(path)
        for split, count in ((TRAIN, TAIL_TRAIN_PER_CLASS), (VAL, source.replay_val_per_class)):
            picked = rows[base_split(len(rows), split, source)[:count]]  # the base model's own splits
            image_parts[split].append(picked)
            label_parts[split].append(np.full(len(picked), label))
    for category, rows in user.items():
        for split in (TRAIN, VAL):
            picked = rows[user_split(len(rows), split)]
            image_parts[split].append(picked)
            label_parts[split].append(np.full(len(picked), categories.index(category)))
    images = {split: np.concatenate(parts) for split, parts in image_parts.items()}
    labels = {split: np.concatenate(parts) for split, parts in label_parts.items()}

    old_top1_production = head_accuracy(
        net.head, FeatureSet(extract_features(net, images[VAL]), labels[VAL]), list(range(len(old_categories)))
    )
    net.grow_head(len(categories))
    prefix, tail = split_backbone(net, unfreeze)
    with torch.no_grad():
        inputs = prefix(to_tensor(images[TRAIN])).numpy()
    losses = train_head(net.head, FeatureSet(inputs, labels[TRAIN]), config, tail=tail)
    net.eval()
    val = FeatureSet(extract_features(net, images[VAL]), labels[VAL])
    bank_rows: dict[int, list[Indices]] = {TRAIN: [], VAL: []}
    for split in (TRAIN, VAL):
        for label in np.unique(labels[split]):
            bank_rows[split].append(np.flatnonzero(labels[split] == label)[: source.bank_rows(split)])
    bank_images = np.concatenate([images[s][np.concatenate(r)] for s, r in bank_rows.items()])
    bank_labels = np.concatenate([labels[s][np.concatenate(r)] for s, r in bank_rows.items()])
    bank_split = np.concatenate([np.full(sum(map(len, r)), s) for s, r in bank_rows.items()])
    return Outcome(val, old_top1_production, losses, build_bank(net, bank_images, bank_labels, bank_split))


def user_split(n: int, split: int) -> Indices:
    return split_indices(n, "train" if split == TRAIN else "val", VAL_FRACTION, 0.0, 0)


def base_split(n: int, split: int, source: SourceConfig) -> Indices:
    """Rows of one of the base model's own splits, as its training drew them."""
    name = "train" if split == TRAIN else "val"
    return split_indices(n, name, source.val_fraction, source.test_fraction, source.split_seed)


def tail_replay_dir(settings: Settings) -> Path | None:
    """Old-class drawings for unfrozen backbone layers; None when the backbone stays frozen."""
    if not settings.retrain_unfreeze:
        return None
    if settings.replay_data_dir is None:
        raise ValueError("RETRAIN_UNFREEZE needs REPLAY_DATA_DIR: a folder of <category>.npy for the old categories")
    return settings.replay_data_dir


def run(context: StageContext) -> StageOutput:
    settings = context.settings
    configure_mlflow(settings)
    checkpoint = production_checkpoint(settings.model_name, settings.model_alias)
    net, old_categories, meta = load_checkpoint(checkpoint)
    source = SourceConfig.of(meta)
    ledger = load_ledger(settings.data_dir)
    user_categories = sorted(ledger.categories())
    new_categories = [c for c in user_categories if c not in old_categories]
    categories = old_categories + new_categories
    old_classes, new_classes = list(range(len(old_categories))), list(range(len(old_categories), len(categories)))
    rng = np.random.default_rng(0)
    user = {category: user_rows(settings.data_dir, category, ledger, rng) for category in user_categories}

    config = HeadConfig()
    unfreeze, replay_dir = settings.retrain_unfreeze, tail_replay_dir(settings)
    with mlflow.start_run(run_name=f"retrain-run-{context.run_dir.name}") as mlflow_run:
        mlflow.log_params({**asdict(config), "source": str(checkpoint), "new_categories": ",".join(new_categories)})
        mlflow.log_param("unfreeze", unfreeze)
        if replay_dir is None:
            outcome = retrain_head(net, old_categories, categories, user, load_replay(checkpoint), source, config)
        else:
            outcome = retrain_tail(net, old_categories, categories, user, replay_dir, unfreeze, source, config)
        mlflow.log_params({"val_rows": len(outcome.val.labels)})
        for epoch in range(0, len(outcome.losses), 10):
            mlflow.log_metric("train_loss", outcome.losses[epoch], step=epoch)
        metrics = {
            "old_top1_production": outcome.old_top1_production,
            "old_top1_candidate": head_accuracy(net.head, outcome.val, old_classes),
            "new_top1_candidate": head_accuracy(net.head, outcome.val, new_classes),
            "val_top1_candidate": head_accuracy(net.head, outcome.val, old_classes + new_classes),
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        candidate = context.run_dir / "candidate.pt"
        # The candidate keeps the base split and bank sizes, so the next retrain reads them from it.
        train_config = {**(meta.get("train_config") or {}), **asdict(source)}
        save_checkpoint(
            candidate,
            net,
            categories,
            replay=outcome.replay,
            parent=str(checkpoint),
            train_config=train_config,
            **metrics,
        )
        mlflow.log_artifact(str(candidate), artifact_path="checkpoint")
    logger.info("head retrained unfreeze=%d metrics=%s", unfreeze, metrics)
    return {
        "candidate": str(candidate),
        "mlflow_run_id": mlflow_run.info.run_id,
        "categories": categories,
        "new_categories": new_categories,
        **metrics,
    }


if __name__ == "__main__":
    stage_main("retrain", run)
