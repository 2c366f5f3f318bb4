"""Short training runs on synthetic data, MLflow logging, distillation and a pyfunc round trip."""

import dataclasses
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from doodle.imaging import encode_bitmap
from doodle.model.data import load_dataset
from doodle.model.evaluate import predict_proba
from doodle.model.net import load_checkpoint
from doodle.model.registry import alias_version, bootstrap, configure_mlflow, log_and_register
from doodle.model.train import TrainConfig, load_teacher, train

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
    configure_mlflow(settings)
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
    # Every other form the model takes: its predict's type hint must not make MLflow convert or refuse them.
    assert model.predict(encode_bitmap(image)) == base64_answer
    assert model.predict(pd.DataFrame({"image": [encode_bitmap(image)]})) == base64_answer
    assert model.predict(pd.DataFrame(image.reshape(1, 784))) == base64_answer


def test_distilled_student_follows_its_teacher_over_the_labels(tmp_path, mlflow_store):
    """A teacher trained with hbar and vbar swapped, and all weight on its soft targets:
    the student answers like the teacher, not like the labels it was given."""
    write_synthetic(tmp_path / "data")
    (tmp_path / "swapped").mkdir()
    for source, target in (("hbar", "vbar"), ("vbar", "hbar"), ("box", "box")):
        shutil.copy(tmp_path / "data" / f"{source}.npy", tmp_path / "swapped" / f"{target}.npy")
    config = TrainConfig(epochs=10, batch_size=32, width=8, test_fraction=0)
    with mlflow.start_run():
        teacher = train(config, tmp_path / "swapped", tmp_path / "teacher.pt")
    distilled = dataclasses.replace(config, teacher=str(teacher.checkpoint), distill_weight=1.0)
    with mlflow.start_run():
        student = train(distilled, tmp_path / "data", tmp_path / "student.pt")

    data = load_dataset(tmp_path / "data", "train")
    answers = {}
    for name, result in (("teacher", teacher), ("student", student)):
        net, _, _ = load_checkpoint(result.checkpoint)
        answers[name] = predict_proba(net, data.images).argmax(axis=1)
    assert (answers["teacher"] == data.labels).mean() < 0.5
    assert (answers["student"] == answers["teacher"]).mean() > 0.9


def test_teacher_must_know_the_same_categories(tmp_path, mlflow_store):
    write_synthetic(tmp_path / "data")
    with mlflow.start_run():
        teacher = train(TrainConfig(epochs=1, batch_size=32, width=8), tmp_path / "data", tmp_path / "teacher.pt")
    with pytest.raises(ValueError, match="teacher .* knows"):
        load_teacher(str(teacher.checkpoint), ["box", "hbar", "star"])


def test_bootstrap_registers_bundled_model_once(mlflow_store):
    first = bootstrap("doodle-classifier", "production")
    second = bootstrap("doodle-classifier", "production")
    assert first == second == alias_version("doodle-classifier", "production") == "1"
    assert len(MlflowClient().search_model_versions("name = 'doodle-classifier'")) == 1


def test_extra_data_joins_the_training_split_only(tmp_path, mlflow_store):
    write_synthetic(tmp_path / "data")
    write_synthetic(tmp_path / "extra", per_class=25)
    (tmp_path / "extra" / "box.npy").unlink()  # an extra folder may cover only some categories
    (tmp_path / "extra" / "kite.npy").write_bytes((tmp_path / "extra" / "hbar.npy").read_bytes())  # and others
    config = TrainConfig(epochs=1, batch_size=32, width=8, extra_data=str(tmp_path / "extra"))
    with mlflow.start_run() as run:
        result = train(config, tmp_path / "data", tmp_path / "net.pt")
    logged = MlflowClient().get_run(run.info.run_id).data.params
    assert logged["train_rows"] == str(3 * 48 + 2 * 25)  # 80% of 60 per class, plus the extra hbar and vbar rows
    assert logged["classes"] == "3"
    _, categories, _ = load_checkpoint(result.checkpoint)
    assert categories == ["box", "hbar", "vbar"]
