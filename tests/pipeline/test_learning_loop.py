"""The learning loop: users label 5 unseen categories, the pipeline makes a model that knows them."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient

from doodle.api.app import create_app
from doodle.config import settings_env, settings_under
from doodle.model.data import load_dataset
from doodle.model.registry import alias_version, configure_mlflow, log_and_register, set_alias
from doodle.model.train import TrainConfig, train
from doodle.pipeline import runs
from doodle.pipeline.stages import STAGES
from tests.utils.images import b64

pytestmark = pytest.mark.e2e

NEW_CATEGORIES = ["apple", "bicycle", "diamond", "eye", "fish"]
DRAWINGS_PER_NEW_CLASS = 120


def top1(model, dataset, categories: list[str]) -> float:
    answers = [a for start in range(0, len(dataset), 1000) for a in model.predict(dataset.images[start : start + 1000])]
    predicted = np.array([categories.index(a["labels"][0]) if a["labels"][0] in categories else -1 for a in answers])
    return float((predicted == dataset.labels).mean())


def test_pipeline_learns_new_categories_without_forgetting(tmp_path, quickdraw_dir):
    base_dir = tmp_path / "base_data"
    base_dir.mkdir()
    for npy in quickdraw_dir.glob("*.npy"):
        if npy.stem not in NEW_CATEGORIES:
            (base_dir / npy.name).symlink_to(npy)
    settings = settings_under(tmp_path / "var", min_new_images=50)
    configure_mlflow(settings)
    with mlflow.start_run(run_name="base-16"):
        base = train(TrainConfig(epochs=6, limit_per_class=1200), base_dir, tmp_path / "base.pt")
        set_alias(settings.model_name, settings.model_alias, log_and_register(base.checkpoint, settings.model_name))

    with TestClient(create_app(settings)) as backend:
        for category in NEW_CATEGORIES:
            drawings = load_dataset(quickdraw_dir, "train", categories=[category]).images[:DRAWINGS_PER_NEW_CLASS]
            for drawing in drawings:
                answer = backend.post("/save-image/", json={"image": b64(drawing), "category": category})
                assert answer.status_code == 200

    done = subprocess.run(
        [sys.executable, "-m", "doodle.cli", "pipeline", "run"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs.list_runs(runs.connect(settings.database_url))
    assert [run.status(stage) for stage in STAGES] == ["complete"] * 7
    assert alias_version(settings.model_name, settings.model_alias) == "2"

    candidate = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{settings.model_alias}")
    before = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/1")
    (described,) = candidate.predict(b64(drawings[0]), params={"model_info": True})
    assert described["added_categories"] == NEW_CATEGORIES  # what GET /model announces
    assert described["added_on"] == datetime.now(UTC).date().isoformat()
    old_test = load_dataset(base_dir, "test")
    new_test = load_dataset(quickdraw_dir, "test", categories=NEW_CATEGORIES)
    assert top1(candidate, new_test, NEW_CATEGORIES) >= 0.7
    old_before, old_after = top1(before, old_test, old_test.categories), top1(candidate, old_test, old_test.categories)
    assert old_after >= old_before - 0.03
