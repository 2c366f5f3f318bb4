"""MLflow store setup, logging checkpoints as pyfunc models, registry and aliases."""

import logging
from importlib import resources
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from doodle.config import Settings
from doodle.model.pyfunc import SIGNATURE, DoodleClassifier

logger = logging.getLogger(__name__)

BUNDLED_CHECKPOINT = "doodle_cnn.pt"
PIP_REQUIREMENTS = ["torch==2.13.0", "mlflow==3.17.2", "numpy", "pandas", "pillow"]
DATA_ATTRIBUTION = (
    "Trained on drawings from the Quick, Draw! Dataset (Google, CC BY 4.0,"
    " https://github.com/googlecreativelab/quickdraw-dataset) and on drawings labelled by this"
    " installation's users."
)


def bundled_checkpoint() -> Path:
    """Path of the base model shipped inside the package."""
    return Path(str(resources.files("doodle.bundled").joinpath(BUNDLED_CHECKPOINT)))


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the settings' store and make sure their experiment exists; returns its id.

    A local store keeps artifacts in MLFLOW_ARTIFACTS_DIR; a tracking server keeps its own.
    """
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    found = client.get_experiment_by_name(settings.mlflow_experiment)
    if found is not None:
        experiment_id: str = found.experiment_id
    else:
        location = None
        if not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
            settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
            location = settings.mlflow_artifacts_dir.resolve().as_uri()
        experiment_id = client.create_experiment(settings.mlflow_experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _next_version(client: MlflowClient, name: str) -> int:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return 1
    return max((int(v.version) for v in versions), default=0) + 1


def log_and_register(checkpoint: Path, name: str, metrics: dict[str, float] | None = None) -> str:
    """Log `checkpoint` as a pyfunc model in the active run and register it; returns the version.

    The model records its own registry version, so every answer names the model it came from.
    """
    client = MlflowClient()
    version = str(_next_version(client, name))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=DoodleClassifier(),
        artifacts={"checkpoint": str(checkpoint)},
        model_config={"model_version": version},
        signature=SIGNATURE,
        pip_requirements=PIP_REQUIREMENTS,
    )
    registered = mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in (metrics or {}).items()})
    client.update_registered_model(name, description=DATA_ATTRIBUTION)
    client.update_model_version(name, registered.version, description=DATA_ATTRIBUTION)
    if str(registered.version) != version:
        logger.warning("registry version differs expected=%s got=%s", version, registered.version)
    logger.info("model registered name=%s version=%s", name, registered.version)
    return str(registered.version)


REPLACES_TAG = "replaces"  # on a version the alias moved to: the version it moved from


class NothingToRollBackError(RuntimeError):
    """The alias is missing or points at the first version it ever served."""


def set_alias(name: str, alias: str, version: str) -> None:
    """Move `name@alias` to `version`, recording on it the version it replaces, for `rollback`."""
    client = MlflowClient()
    previous = alias_version(name, alias)
    if previous is not None and previous != version:
        client.set_model_version_tag(name, version, REPLACES_TAG, previous)
    client.set_registered_model_alias(name, alias, version)
    logger.info("alias set name=%s alias=%s version=%s previous=%s", name, alias, version, previous)


def rollback(name: str, alias: str) -> tuple[str, str]:
    """Move `name@alias` back to the version it replaced; returns (from, to). Repeat to go further back."""
    current = alias_version(name, alias)
    if current is None:
        raise NothingToRollBackError(f"models:/{name}@{alias} does not exist")
    client = MlflowClient()
    previous = client.get_model_version(name, current).tags.get(REPLACES_TAG)
    if previous is None:
        raise NothingToRollBackError(f"version {current} is the first that {name}@{alias} served")
    client.set_registered_model_alias(name, alias, previous)
    logger.info("alias rolled back name=%s alias=%s from=%s to=%s", name, alias, current, previous)
    return current, previous


def alias_version(name: str, alias: str) -> str | None:
    """The version behind `name@alias`, or None when there is none yet."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), "INVALID_PARAMETER_VALUE"):
            return None
        raise


def bootstrap(name: str, alias: str, checkpoint: Path | None = None) -> str:
    """Register the bundled model under `name@alias` unless the alias exists; returns the version."""
    existing = alias_version(name, alias)
    if existing is not None:
        return existing
    checkpoint = checkpoint or bundled_checkpoint()
    with mlflow.start_run(run_name="bundled-model"):
        mlflow.set_tag("source", "bundled")
        version = log_and_register(checkpoint, name)
    set_alias(name, alias, version)
    return version
