"""Stage 5: retrain the production model's head on new data plus a replay sample of the old.

By default the backbone stays frozen and the old classes replay the features
banked with the production model. RETRAIN_UNFREEZE=N also trains the backbone's
last N layers; old classes then replay drawings from REPLAY_DATA_DIR.
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch

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
from doodle.model.net import load_checkpoint, load_replay, save_checkpoint
from doodle.model.registry import configure_mlflow
from doodle.pipeline.ledger import load_ledger, read_rows
from doodle.pipeline.runner import StageContext, stage_main

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2  # of each class's user drawings, fixed by seed: the gate's validation rows
OLD_ROWS_PER_CLASS = 1000  # replay sample of merged user data per class
BANK_TRAIN_PER_CLASS, BANK_VAL_PER_CLASS = 160, 60
TAIL_TRAIN_PER_CLASS = 500  # replay images per old class when backbone layers are unfrozen


def production_checkpoint(name: str, alias: str) -> Path:
    """Local path of the checkpoint inside the model at `name@alias`."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}"))
    checkpoints = sorted((local / "artifacts").glob("*.pt"))
    if not checkpoints:
        raise RuntimeError(f"models:/{name}@{alias} has no checkpoint artifact")
    return checkpoints[0]


def user_rows(data_dir: Path, category: str, ledger, rng: np.random.Generator) -> np.ndarray:
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
    replay: dict | None


def retrain_head(net, old_categories, categories, user, bank, config: HeadConfig) -> Outcome:
    """Frozen backbone: train new head rows on features of user data plus the replay bank."""
    new_labels = range(len(old_categories), len(categories))
    if bank is None:
        logger.warning("production model has no replay bank: old classes replay only user data")
    train_parts = [bank_part(bank, TRAIN)] if bank else []
    val_parts = [bank_part(bank, VAL)] if bank else []
    replay = {k: [v] for k, v in bank.items()} if bank else {"features": [], "labels": [], "split": []}
    for category, rows in user.items():
        label = categories.index(category)
        features = extract_features(net, rows)
        for split, part in ((TRAIN, train_parts), (VAL, val_parts)):
            picked = user_split(len(rows), split)
            part.append(FeatureSet(features[picked], np.full(len(picked), label)))
            if label in new_labels:  # the candidate carries replay for its new classes too
                keep = picked[: BANK_TRAIN_PER_CLASS if split == TRAIN else BANK_VAL_PER_CLASS]
                replay["features"].append(torch.from_numpy(features[keep]).half())
                replay["labels"].append(torch.full((len(keep),), label, dtype=torch.int64))
                replay["split"].append(torch.full((len(keep),), split, dtype=torch.uint8))
    train, val = FeatureSet.concat(train_parts), FeatureSet.concat(val_parts)
    old_top1_production = head_accuracy(net.head, val, list(range(len(old_categories))))
    net.grow_head(len(categories))
    frozen_rows = len(old_categories) if len(categories) > len(old_categories) else 0
    losses = train_head(net.head, train, config, old_classes=frozen_rows)
    replay = {k: torch.cat(v) for k, v in replay.items()} if replay["labels"] else None
    return Outcome(val, old_top1_production, losses, replay)


def retrain_tail(net, old_categories, categories, user, replay_dir: Path, unfreeze: int, config) -> Outcome:
    """Unfrozen tail: old classes replay images from `replay_dir`, so the new backbone can be measured."""
    images = {TRAIN: [], VAL: []}
    labels = {TRAIN: [], VAL: []}
    for label, category in enumerate(old_categories):
        path = replay_dir / f"{category}.npy"
        if not path.exists():
            raise FileNotFoundError(f"unfreezing needs replay drawings of every old category: {path} is missing")
        rows = load_category(path)
        for split, name, count in ((TRAIN, "train", TAIL_TRAIN_PER_CLASS), (VAL, "val", BANK_VAL_PER_CLASS)):
            picked = rows[split_indices(len(rows), name, 0.1, 0.1, 0)[:count]]  # the base model's own splits
            images[split].append(picked)
            labels[split].append(np.full(len(picked), label))
    for category, rows in user.items():
        for split in (TRAIN, VAL):
            picked = rows[user_split(len(rows), split)]
            images[split].append(picked)
            labels[split].append(np.full(len(picked), categories.index(category)))
    images = {split: np.concatenate(parts) for split, parts in images.items()}
    labels = {split: np.concatenate(parts) for split, parts in labels.items()}

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
    bank_rows = {TRAIN: [], VAL: []}
    for split, count in ((TRAIN, BANK_TRAIN_PER_CLASS), (VAL, BANK_VAL_PER_CLASS)):
        for label in np.unique(labels[split]):
            bank_rows[split].append(np.flatnonzero(labels[split] == label)[:count])
    bank_images = np.concatenate([images[s][np.concatenate(r)] for s, r in bank_rows.items()])
    bank_labels = np.concatenate([labels[s][np.concatenate(r)] for s, r in bank_rows.items()])
    bank_split = np.concatenate([np.full(sum(map(len, r)), s) for s, r in bank_rows.items()])
    return Outcome(val, old_top1_production, losses, build_bank(net, bank_images, bank_labels, bank_split))


def user_split(n: int, split: int) -> np.ndarray:
    return split_indices(n, "train" if split == TRAIN else "val", VAL_FRACTION, 0.0, 0)


def run(context: StageContext) -> dict:
    settings = context.settings
    configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_experiment, settings.mlflow_artifacts_dir)
    source = production_checkpoint(settings.model_name, settings.model_alias)
    net, old_categories, _ = load_checkpoint(source)
    ledger = load_ledger(settings.data_dir)
    user_categories = sorted(c for c in set(ledger.old) | set(ledger.new) if ledger.old.get(c) or ledger.new.get(c))
    new_categories = [c for c in user_categories if c not in old_categories]
    categories = old_categories + new_categories
    old_classes, new_classes = list(range(len(old_categories))), list(range(len(old_categories), len(categories)))
    rng = np.random.default_rng(0)
    user = {category: user_rows(settings.data_dir, category, ledger, rng) for category in user_categories}

    config = HeadConfig()
    unfreeze = settings.retrain_unfreeze
    if unfreeze and settings.replay_data_dir is None:
        raise ValueError("RETRAIN_UNFREEZE needs REPLAY_DATA_DIR: a folder of <category>.npy for the old categories")
    with mlflow.start_run(run_name=f"retrain-run-{context.run_dir.name}") as mlflow_run:
        mlflow.log_params({**asdict(config), "source": str(source), "new_categories": ",".join(new_categories)})
        mlflow.log_param("unfreeze", unfreeze)
        if unfreeze:
            outcome = retrain_tail(net, old_categories, categories, user, settings.replay_data_dir, unfreeze, config)
        else:
            outcome = retrain_head(net, old_categories, categories, user, load_replay(source), config)
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
        save_checkpoint(candidate, net, categories, replay=outcome.replay, parent=str(source), **metrics)
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
