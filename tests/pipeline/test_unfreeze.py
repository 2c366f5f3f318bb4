"""RETRAIN_UNFREEZE: how many of the backbone's last layers the retrain stage fine-tunes with the head."""

from pathlib import Path

import mlflow
import pytest
import torch

from doodle.config import settings_under
from doodle.model.finetune import split_backbone
from doodle.model.net import DoodleNet, NetConfig, load_checkpoint
from doodle.model.registry import configure_mlflow, log_and_register, set_alias
from doodle.model.train import TrainConfig, train
from doodle.pipeline import runs
from doodle.pipeline.orchestrator import run_pipeline
from doodle.pipeline.stages import STAGES
from tests.utils.drawings import save_drawings

NEW_CATEGORIES = ["apple", "fish"]


def test_split_backbone_counts_weighted_layers_from_the_end():
    net = DoodleNet(NetConfig(width=8))
    prefix, tail = split_backbone(net, 1)
    assert isinstance(tail[0], torch.nn.Linear) and len(prefix) + len(tail) == len(net.backbone)
    _, two = split_backbone(net, 2)
    assert isinstance(two[0], torch.nn.Conv2d)
    for wrong in (0, 99):
        with pytest.raises(ValueError, match="unfreeze must be between 1 and"):
            split_backbone(net, wrong)


def registered_base(tmp_path: Path, quickdraw_dir: Path, **overrides):
    base_dir = tmp_path / "base_data"
    base_dir.mkdir()
    for npy in quickdraw_dir.glob("*.npy"):
        if npy.stem not in NEW_CATEGORIES:
            (base_dir / npy.name).symlink_to(npy)
    settings = settings_under(tmp_path / "var", min_new_images=1, **overrides)
    configure_mlflow(settings)
    with mlflow.start_run(run_name="base"):
        base = train(TrainConfig(epochs=2, width=8, limit_per_class=300), base_dir, tmp_path / "base.pt")
        set_alias(settings.model_name, settings.model_alias, log_and_register(base.checkpoint, settings.model_name))
    return settings, base.checkpoint


@pytest.mark.integration
def test_unfreezing_one_layer_trains_the_last_backbone_layer_only(tmp_path, quickdraw_dir, quickdraw_test):
    settings, base_checkpoint = registered_base(tmp_path, quickdraw_dir, retrain_unfreeze=1)
    for category in NEW_CATEGORIES:
        label = quickdraw_test.categories.index(category)
        save_drawings(settings.img_data_location, quickdraw_test.images[quickdraw_test.labels == label][:40], category)

    engine = runs.connect(settings.database_url)
    assert run_pipeline(settings, engine, report=lambda line: None) == 0
    (run,) = runs.list_runs(engine)
    assert [run.status(stage) for stage in STAGES] == ["complete"] * 7

    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.model_name}/2"))
    candidate, categories, _ = load_checkpoint(next((folder / "artifacts").glob("*.pt")))
    base, _, _ = load_checkpoint(base_checkpoint)
    assert categories[-2:] == NEW_CATEGORIES
    _, tail = split_backbone(candidate, 1)
    changed = {
        name
        for name, weight in candidate.backbone.state_dict().items()
        if not torch.equal(weight, base.backbone.state_dict()[name])
    }
    assert changed == {f"{len(candidate.backbone) - len(tail)}.weight", f"{len(candidate.backbone) - len(tail)}.bias"}
