"""Stage 6: register the candidate, and move the deployment alias only if it passes the gate."""

import logging
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from doodle.model.registry import configure_mlflow, log_and_register, set_alias
from doodle.pipeline.runner import StageContext, StageOutput, stage_main

logger = logging.getLogger(__name__)


def gate(result: StageOutput, max_old_drop: float, min_new_top1: float) -> tuple[bool, str]:
    """Promote only if old classes kept their accuracy and new classes reached the minimum."""
    before, after = result["old_top1_production"], result["old_top1_candidate"]
    if before is not None and after is not None and after < before - max_old_drop:
        return False, f"old-class top-1 fell from {before:.4f} to {after:.4f} (tolerance {max_old_drop})"
    new = result["new_top1_candidate"]
    if new is not None and new < min_new_top1:
        return False, f"new-class top-1 {new:.4f} is below {min_new_top1}"
    return True, f"old-class top-1 {before} -> {after}, new-class top-1 {new}"


def run(context: StageContext) -> StageOutput:
    settings = context.settings
    result = context.read_output("retrain")
    configure_mlflow(settings)
    metrics = {k: v for k, v in result.items() if k.endswith("_candidate") or k.endswith("_production")}
    with mlflow.start_run(run_id=result["mlflow_run_id"]):
        version = log_and_register(Path(result["candidate"]), settings.model_name, metrics)
        promoted, reason = gate(result, settings.gate_max_old_drop, settings.gate_min_new_top1)
        mlflow.set_tags({"promoted": str(promoted), "gate": reason})
    client = MlflowClient()
    client.set_model_version_tag(settings.model_name, version, "promoted", str(promoted))
    client.set_model_version_tag(settings.model_name, version, "gate", reason)
    if promoted:
        set_alias(settings.model_name, settings.model_alias, version)
    logger.info("gate decision version=%s promoted=%s reason=%s", version, promoted, reason)
    return {"version": version, "promoted": promoted, "reason": reason}


if __name__ == "__main__":
    stage_main("register", run)
