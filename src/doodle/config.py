"""Deployment settings; the only module that reads the environment."""

import json
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_UI_ORIGINS = ["http://localhost:9080", "http://127.0.0.1:9080"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # The design's names and defaults.
    mlflow_hosted_model_url: str = "http://localhost:5002/invocations/"
    img_data_location: Path = Path("./uploaded_img_data/category")

    # Local state: MLflow store, training data, run store and logs.
    var_dir: Path = Path("var")
    data_dir: Path = Path("var/data")  # the pipeline's labelled data: npy/{old,new}/<category>.npy, under DVC
    log_dir: Path = Path("var/logs")
    mlflow_tracking_uri: str = "sqlite:///var/mlflow.db"
    mlflow_artifacts_dir: Path = Path("var/mlartifacts")
    mlflow_experiment: str = "doodle"
    database_url: str = "sqlite:///var/pipeline.db"

    # The served model.
    model_name: str = "doodle-classifier"
    model_alias: str = "production"

    # Retraining pipeline.
    pipeline_dir: Path = Path("var/pipeline")  # run folders, and the run lock with a SQLite run store
    min_new_images: int = Field(10, ge=1)
    dvc_remote: str | None = None  # e.g. a folder or s3:// URL; none keeps data local
    gate_max_old_drop: float = Field(0.025, ge=0)  # promotion gate: old-class top-1 may drop this much
    gate_min_new_top1: float = Field(0.7, ge=0, le=1)  # and new classes must reach this top-1
    retrain_unfreeze: int = Field(3, ge=0)  # backbone layers fine-tuned with the head; 0 trains new head rows only
    quickdraw_url: str = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/"  # `doodle data fetch`

    # Backend.
    predict_timeout_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(0.5, gt=0)
    # Serving throughput, tuned on 2 cores with bench/predict.py: one model call at a time, one torch
    # thread, so batches grow under load and the backend keeps a core. Raise both on bigger machines.
    model_threads: int = Field(1, ge=0)  # torch threads of the model server; 0 keeps torch's default
    predict_max_batch: int = Field(32, ge=1, le=256)  # images per model-server call
    predict_max_in_flight: int = Field(1, ge=1, le=64)  # concurrent model-server calls
    # Unset: the backend allows the local drawing UI, and the viewer's read-only GETs allow any origin
    # (the original pipeline page reads them from elsewhere). Set: both allow only these origins.
    cors_origins: list[str] | None = None
    max_request_bytes: int = Field(5_000_000, ge=1024)  # larger request bodies get a 413
    max_categories: int = Field(1000, ge=1)  # distinct labels the store accepts
    api_token: SecretStr | None = None  # when set, POST /save-image/ needs "Authorization: Bearer <token>"

    # Drawing UI: the backend URL as the browser sees it.
    ui_backend_url: str = "http://localhost:8000"
    log_level: str = "INFO"

    def backend_cors_origins(self) -> list[str]:
        return list(LOCAL_UI_ORIGINS) if self.cors_origins is None else self.cors_origins

    def viewer_cors_origins(self) -> list[str]:
        return ["*"] if self.cors_origins is None else self.cors_origins


def settings_under(root: Path, **overrides) -> Settings:
    """Settings with every piece of local state (stores, data, logs) under `root`, ignoring .env."""
    root = Path(root)
    values = dict(
        var_dir=root,
        img_data_location=root / "img",
        data_dir=root / "data",
        log_dir=root / "logs",
        pipeline_dir=root / "pipeline",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "mlartifacts",
        database_url=f"sqlite:///{root / 'pipeline.db'}",
    )
    return Settings(_env_file=None, **{**values, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables, so child processes see exactly the same."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


@lru_cache
def get_settings() -> Settings:
    return Settings()
