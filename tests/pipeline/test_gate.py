"""The promotion gate: a refused candidate changes nothing users see, and loses none of its drawings."""

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from doodle.config import settings_under
from doodle.model.registry import alias_version, bootstrap, configure_mlflow
from doodle.pipeline import runs
from doodle.pipeline.orchestrator import run_pipeline
from tests.utils.drawings import save_drawings

pytestmark = pytest.mark.integration


def drawings_trained_on(settings, version: str, category: str) -> int:
    run_id = MlflowClient().get_model_version(settings.model_name, version).run_id
    return int(mlflow.get_run(run_id).data.params[f"drawings.{category}"])


def test_a_refused_candidates_drawings_are_learned_again_by_the_next_run(tmp_path, quickdraw_new_dir):
    cars = np.load(quickdraw_new_dir / "car.npy", mmap_mode="r")[:40]
    strict = settings_under(tmp_path, min_new_images=1, retrain_unfreeze=0, gate_min_new_top1=1.0)
    configure_mlflow(strict)
    bootstrap(strict.model_name, strict.model_alias)
    engine = runs.connect(strict.database_url)

    save_drawings(strict.img_data_location, cars[:30], "car")
    assert run_pipeline(strict, engine, report=lambda line: None) == 0
    refused = MlflowClient().get_model_version(strict.model_name, "2")
    assert refused.tags["promoted"] == "False" and "below 1.0" in refused.tags["gate"]
    assert alias_version(strict.model_name, strict.model_alias) == "1"

    loose = strict.model_copy(update={"gate_min_new_top1": 0.0})
    save_drawings(loose.img_data_location, cars[30:], "car")
    assert run_pipeline(loose, engine, report=lambda line: None) == 0
    assert alias_version(loose.model_name, loose.model_alias) == "3"
    assert drawings_trained_on(loose, "2", "car") == 30
    assert drawings_trained_on(loose, "3", "car") == 40  # the refused run's 30 and the 10 saved since
