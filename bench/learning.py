"""The learning loop at full size: how well does the pipeline learn 5 categories it never saw?

Trains a base model on 16 categories of ../shared/quickdraw (all their training rows),
registers it, stores `--per-class` user drawings of each of the 5 held-back categories,
runs the real pipeline once and measures:
  - new-class top-1 of the promoted model (target >= 85%)
  - the old-class top-1 drop against the base model (target <= 1.5 points)
  - pipeline wall time (target < 60 s for 1,000 drawings)
Accuracy is on the held-out test split, which neither training nor the pipeline saw.

Run: .venv/bin/python bench/learning.py [--epochs 30] [--base-checkpoint PATH]
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np

from doodle.config import settings_under
from doodle.drawings import save_drawing
from doodle.imaging import normalize_drawing, to_png
from doodle.model.data import load_dataset
from doodle.model.registry import alias_version, configure_mlflow, log_and_register, set_alias
from doodle.model.train import TrainConfig, train
from doodle.pipeline import runs
from doodle.pipeline.orchestrator import run_pipeline

QUICKDRAW = Path(__file__).resolve().parents[1].parent / "shared" / "quickdraw"
NEW_CATEGORIES = ["apple", "bicycle", "diamond", "eye", "fish"]


def top1(model, dataset) -> float:
    answers = [a for i in range(0, len(dataset), 1000) for a in model.predict(dataset.images[i : i + 1000])]
    predicted = [a["labels"][0] for a in answers]
    truth = [dataset.categories[label] for label in dataset.labels]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=QUICKDRAW)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--base-checkpoint", type=Path, help="reuse a 16-category base model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="doodle-learning-"))
    base_dir = root / "base_data"
    base_dir.mkdir()
    for npy in args.data.glob("*.npy"):
        if npy.stem not in NEW_CATEGORIES:
            (base_dir / npy.name).symlink_to(npy.resolve())
    settings = settings_under(root, min_new_images=1)
    configure_mlflow(settings)
    with mlflow.start_run(run_name="base-16"):
        checkpoint = args.base_checkpoint
        if checkpoint is None:
            print(f"training the 16-category base model for {args.epochs} epochs ...")
            checkpoint = train(TrainConfig(epochs=args.epochs), base_dir, root / "base.pt").checkpoint
        set_alias(settings.model_name, settings.model_alias, log_and_register(checkpoint, settings.model_name))

    for category in NEW_CATEGORIES:
        drawings = load_dataset(args.data, "train", categories=[category]).images[: args.per_class]
        for drawing in drawings:
            save_drawing(settings.img_data_location, category, to_png(normalize_drawing(drawing.reshape(28, 28))))
    total = args.per_class * len(NEW_CATEGORIES)

    started = time.perf_counter()
    code = run_pipeline(settings, runs.connect(settings.database_url))
    seconds = time.perf_counter() - started
    promoted = alias_version(settings.model_name, settings.model_alias) == "2"

    base = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/1")
    candidate = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/2")
    old_test = load_dataset(base_dir, "test")
    new_test = load_dataset(args.data, "test", categories=NEW_CATEGORIES)
    old_before, old_after = top1(base, old_test), top1(candidate, old_test)
    new_after = top1(candidate, new_test)

    print(f"\npipeline exit {code}, candidate promoted: {promoted}  (work dir {root})")
    print(f"new-class top-1       {new_after:.4f}   target >= 0.85")
    print(f"old-class top-1       {old_before:.4f} -> {old_after:.4f}")
    print(f"old-class drop        {100 * (old_before - old_after):.2f} points   target <= 1.5")
    print(f"pipeline wall time    {seconds:.1f} s for {total} drawings   target < 60 s (1,000 drawings)")


if __name__ == "__main__":
    main()
