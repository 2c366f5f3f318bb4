"""Stage 5: retrain the production model's head on new data plus a replay sample of the old."""

import logging
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import torch

from doodle.model.data import split_indices
from doodle.model.finetune import (
    TRAIN,
    VAL,
    FeatureSet,
    HeadConfig,
    bank_part,
    extract_features,
    head_accuracy,
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


def run(context: StageContext) -> dict:
    settings = context.settings
    configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_experiment, settings.mlflow_artifacts_dir)
    source = production_checkpoint(settings.model_name, settings.model_alias)
    net, old_categories, _ = load_checkpoint(source)
    bank = load_replay(source)
    ledger = load_ledger(settings.data_dir)
    user_categories = sorted(c for c in set(ledger.old) | set(ledger.new) if ledger.old.get(c) or ledger.new.get(c))
    new_categories = [c for c in user_categories if c not in old_categories]
    categories = old_categories + new_categories
    old_classes, new_classes = list(range(len(old_categories))), list(range(len(old_categories), len(categories)))
    if bank is None:
        logger.warning("production model has no replay bank: old classes replay only user data")

    train_parts = [bank_part(bank, TRAIN)] if bank else []
    val_parts = [bank_part(bank, VAL)] if bank else []
    rng = np.random.default_rng(0)
    new_bank = {k: [v] for k, v in bank.items()} if bank else {"features": [], "labels": [], "split": []}
    for category in user_categories:
        label = categories.index(category)
        features = extract_features(net, user_rows(settings.data_dir, category, ledger, rng))
        for split, part in ((TRAIN, train_parts), (VAL, val_parts)):
            rows = split_indices(len(features), "train" if split == TRAIN else "val", VAL_FRACTION, 0.0, 0)
            part.append(FeatureSet(features[rows], np.full(len(rows), label)))
            if category in new_categories:  # the candidate carries replay for its new classes too
                keep = rows[: BANK_TRAIN_PER_CLASS if split == TRAIN else BANK_VAL_PER_CLASS]
                new_bank["features"].append(torch.from_numpy(features[keep]).half())
                new_bank["labels"].append(torch.full((len(keep),), label, dtype=torch.int64))
                new_bank["split"].append(torch.full((len(keep),), split, dtype=torch.uint8))
    train, val = FeatureSet.concat(train_parts), FeatureSet.concat(val_parts)

    old_top1_production = head_accuracy(net.head, val, old_classes)
    net.grow_head(len(categories))
    config = HeadConfig()
    with mlflow.start_run(run_name=f"retrain-run-{context.run_dir.name}") as mlflow_run:
        mlflow.log_params({**asdict(config), "source": str(source), "new_categories": ",".join(new_categories)})
        mlflow.log_params({"train_rows": len(train.labels), "val_rows": len(val.labels)})
        frozen_rows = len(old_categories) if new_categories else 0
        losses = train_head(net.head, train, config, old_classes=frozen_rows)
        for epoch in range(0, len(losses), 10):
            mlflow.log_metric("train_loss", losses[epoch], step=epoch)
        metrics = {
            "old_top1_production": old_top1_production,
            "old_top1_candidate": head_accuracy(net.head, val, old_classes),
            "new_top1_candidate": head_accuracy(net.head, val, new_classes),
            "val_top1_candidate": head_accuracy(net.head, val, old_classes + new_classes),
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        candidate = context.run_dir / "candidate.pt"
        replay = {k: torch.cat(v) for k, v in new_bank.items()} if new_bank["labels"] else None
        save_checkpoint(candidate, net, categories, replay=replay, parent=str(source), **metrics)
        mlflow.log_artifact(str(candidate), artifact_path="checkpoint")
    logger.info("head retrained metrics=%s", metrics)
    return {
        "candidate": str(candidate),
        "mlflow_run_id": mlflow_run.info.run_id,
        "categories": categories,
        "new_categories": new_categories,
        **metrics,
    }


if __name__ == "__main__":
    stage_main("retrain", run)
