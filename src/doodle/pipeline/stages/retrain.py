"""Stage 5: retrain the production model on the users' new drawings plus replay of the old.

The production checkpoint carries replay drawings: a few hundred real drawings per class it
knows. By default (RETRAIN_UNFREEZE=3) the backbone's last three layers and the head fine-tune
on them and the new drawings, distilled towards the production model so old classes keep their
meaning. RETRAIN_UNFREEZE=0 trains only new head rows on frozen features: faster, learns less.
"""

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import numpy.typing as npt
import torch

from doodle.model.data import split_indices
from doodle.model.evaluate import predict_proba, top1_among
from doodle.model.finetune import (
    TRAIN,
    VAL,
    FeatureSet,
    HeadConfig,
    TailConfig,
    extract_features,
    finetune_tail,
    imprint,
    train_head,
)
from doodle.model.net import DoodleNet, fuse_for_inference, load_checkpoint, load_replay, save_checkpoint
from doodle.model.registry import configure_mlflow
from doodle.pipeline.ledger import Ledger, Rows, load_ledger, read_rows
from doodle.pipeline.runner import StageContext, StageOutput, stage_main

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2  # of each class's user drawings, fixed by seed: the gate's validation rows
OLD_ROWS_PER_CLASS = 1000  # replay sample of merged user data per class

Bank = dict[str, torch.Tensor]  # a checkpoint's replay drawings: images, labels, split (see doodle.model.train)
Indices = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SourceConfig:
    """What retraining keeps of how the production model was trained: its `train_config`."""

    replay_train_per_class: int = 240  # replay drawings per class: the candidate keeps the same sizes
    replay_val_per_class: int = 60

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> "SourceConfig":
        """From a checkpoint's meta."""
        saved = meta.get("train_config") or {}
        return cls(**{item.name: saved[item.name] for item in fields(cls) if item.name in saved})

    def replay_rows(self, split: int) -> int:
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
    val_predicted: Indices  # the candidate's top-1 on the validation rows, as served
    old_top1_production: float | None
    losses: list[float]
    replay: Bank | None


@dataclass
class Drawings:
    images: Rows  # uint8 (n, 784)
    labels: Indices

    def rows_per_class(self, per_class: int) -> "Drawings":
        """The first `per_class` rows of each class."""
        keep = np.sort(
            np.concatenate([np.flatnonzero(self.labels == label)[:per_class] for label in np.unique(self.labels)])
        )
        return Drawings(self.images[keep], self.labels[keep])


def gather(replay: Bank | None, categories: list[str], user: dict[str, Rows]) -> dict[int, Drawings]:
    """TRAIN and VAL drawings: the production model's replay drawings plus the users' rows."""
    if replay is None or "images" not in replay:
        logger.warning("production model carries no replay drawings: old classes replay only user data")
        replay = None
    parts: dict[int, list[Drawings]] = {TRAIN: [], VAL: []}
    for split, part in parts.items():
        if replay is not None:
            keep = replay["split"].numpy() == split
            part.append(Drawings(replay["images"].numpy()[keep], replay["labels"].numpy()[keep]))
        for category, rows in user.items():
            picked = rows[user_split(len(rows), split)]
            part.append(Drawings(picked, np.full(len(picked), categories.index(category))))
    return {
        split: Drawings(np.concatenate([d.images for d in part]), np.concatenate([d.labels for d in part]))
        for split, part in parts.items()
    }


def served_top1(fused: DoodleNet, images: Rows) -> Indices:
    """Each drawing's top label as the model server answers it: `fused` (see fuse_for_inference), mirror averaged."""
    top1: Indices = predict_proba(fused, images).argmax(axis=1)
    return top1


def retrain(
    net: DoodleNet,
    old_categories: list[str],
    categories: list[str],
    drawings: dict[int, Drawings],
    source: SourceConfig,
    unfreeze: int,
) -> Outcome:
    """Teach `net` the new categories from `drawings`; the old ones replay.

    unfreeze=0 trains new head rows on frozen-backbone features. Otherwise the backbone's last
    `unfreeze` layers and the whole head fine-tune on augmented drawings, distilled towards the
    production model on its own classes.
    """
    train, val = drawings[TRAIN], drawings[VAL]
    old_classes = list(range(len(old_categories)))
    teacher = fuse_for_inference(net)  # the production model as served, and the fine-tuning's teacher
    old_top1_production = top1_among(served_top1(teacher, val.images), val.labels, old_classes)
    net.grow_head(len(categories))
    for label in range(len(old_categories), len(categories)):
        if (train.labels == label).any():
            imprint(net, train.images[train.labels == label], label)
    if unfreeze:
        losses = finetune_tail(net, teacher, train.images, train.labels, unfreeze, TailConfig())
    else:
        frozen_rows = len(old_categories) if len(categories) > len(old_categories) else 0
        features = FeatureSet(extract_features(net, train.images), train.labels)
        losses = train_head(net.head, features, HeadConfig(), old_classes=frozen_rows)
    kept = {split: drawings[split].rows_per_class(source.replay_rows(split)) for split in (TRAIN, VAL)}
    replay = {
        "images": torch.from_numpy(np.concatenate([d.images for d in kept.values()])),
        "labels": torch.from_numpy(np.concatenate([d.labels for d in kept.values()]).astype(np.int64)),
        "split": torch.from_numpy(np.concatenate([np.full(len(d.labels), s, np.uint8) for s, d in kept.items()])),
    }
    return Outcome(served_top1(fuse_for_inference(net), val.images), old_top1_production, losses, replay)


def user_split(n: int, split: int) -> Indices:
    return split_indices(n, "train" if split == TRAIN else "val", VAL_FRACTION, 0.0, 0)


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

    unfreeze = settings.retrain_unfreeze
    config = asdict(TailConfig()) if unfreeze else asdict(HeadConfig())
    with mlflow.start_run(run_name=f"retrain-run-{context.run_dir.name}") as mlflow_run:
        mlflow.log_params({**config, "source": str(checkpoint), "new_categories": ",".join(new_categories)})
        mlflow.log_param("unfreeze", unfreeze)
        mlflow.log_params({f"drawings.{category}": len(rows) for category, rows in user.items()})
        drawings = gather(load_replay(checkpoint), categories, user)
        outcome = retrain(net, old_categories, categories, drawings, source, unfreeze)
        val_labels = drawings[VAL].labels
        mlflow.log_params({"val_rows": len(val_labels)})
        for epoch in range(0, len(outcome.losses), 10):
            mlflow.log_metric("train_loss", outcome.losses[epoch], step=epoch)
        metrics = {
            "old_top1_production": outcome.old_top1_production,
            "old_top1_candidate": top1_among(outcome.val_predicted, val_labels, old_classes),
            "new_top1_candidate": top1_among(outcome.val_predicted, val_labels, new_classes),
            "val_top1_candidate": top1_among(outcome.val_predicted, val_labels, old_classes + new_classes),
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        candidate = context.run_dir / "candidate.pt"
        # The candidate keeps the replay sizes, so the next retrain reads them from it.
        train_config = {**(meta.get("train_config") or {}), **asdict(source)}
        save_checkpoint(
            candidate,
            net,
            categories,
            replay=outcome.replay,
            parent=str(checkpoint),
            added_categories=new_categories,
            added_on=datetime.now(UTC).date().isoformat(),
            train_config=train_config,
            **metrics,
        )
        mlflow.log_artifact(str(candidate), artifact_path="checkpoint")
    logger.info("retrained unfreeze=%d metrics=%s", unfreeze, metrics)
    return {
        "candidate": str(candidate),
        "mlflow_run_id": mlflow_run.info.run_id,
        "categories": categories,
        "new_categories": new_categories,
        **metrics,
    }


if __name__ == "__main__":
    stage_main("retrain", run)
