"""One short epoch on synthetic data, MLflow logging, and a pyfunc round trip."""

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from doodle.imaging import encode_bitmap
from doodle.model.registry import alias_version, bootstrap, configure_mlflow, log_and_register
from doodle.model.train import TrainConfig, train

pytestmark = pytest.mark.integration


def write_synthetic(folder, per_class=60):
    """Three easy classes: a horizontal bar, a vertical bar, a box outline."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("hbar", "vbar", "box"):
        images = np.zeros((per_class, 28, 28), np.uint8)
        for image in images:
            a, b = rng.integers(4, 10), rng.integers(18, 24)
            if name == "hbar":
                image[13:16, a:b] = 255
            elif name == "vbar":
                image[a:b, 13:16] = 255
            else:
                image[a:b, a] = image[a:b, b] = image[a, a:b] = image[b, a:b] = 255
        np.save(folder / f"{name}.npy", images.reshape(per_class, 784))
    return ["box", "hbar", "vbar"]


@pytest.fixture
def mlflow_store(settings):
    configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_experiment, settings.mlflow_artifacts_dir)
    return settings


def test_train_logs_to_mlflow_and_pyfunc_round_trips(tmp_path, mlflow_store):
    categories = write_synthetic(tmp_path / "data")
    config = TrainConfig(epochs=1, batch_size=32, width=8)
    with mlflow.start_run() as run:
        result = train(config, tmp_path / "data", tmp_path / "out" / "net.pt")
        version = log_and_register(result.checkpoint, "doodle-test", result.test.metrics("test_"))

    logged = MlflowClient().get_run(run.info.run_id).data
    assert logged.params["epochs"] == "1" and logged.params["arch"] == "cnn"
    assert {"train_loss", "val_top1", "test_top1", "test_top3"} <= set(logged.metrics)
    assert version == "1"

    model = mlflow.pyfunc.load_model(f"models:/doodle-test/{version}")
    image = np.zeros((28, 28), np.uint8)
    image[13:16, 5:22] = 255
    base64_answer, array_answer = model.predict([encode_bitmap(image)]), model.predict(image.reshape(1, 784))
    for answer in (base64_answer, array_answer):
        assert sorted(answer[0]["labels"][:3]) == categories
        assert answer[0]["model_version"] == "1"
        assert answer[0]["probabilities"] == sorted(answer[0]["probabilities"], reverse=True)
    assert base64_answer == array_answer


def test_bootstrap_registers_bundled_model_once(mlflow_store):
    first = bootstrap("doodle-classifier", "production")
    second = bootstrap("doodle-classifier", "production")
    assert first == second == alias_version("doodle-classifier", "production") == "1"
    assert len(MlflowClient().search_model_versions("name = 'doodle-classifier'")) == 1
