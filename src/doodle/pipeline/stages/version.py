"""Stage 4: version the training data with DVC and commit the pointer to git."""

import logging
import subprocess
import sys
from pathlib import Path

from doodle.pipeline.runner import StageContext, StageOutput, stage_main

logger = logging.getLogger(__name__)

GIT_IDENTITY = ["-c", "user.name=doodle pipeline", "-c", "user.email=pipeline@doodle.invalid"]


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def init_repo(data_dir: Path) -> None:
    """Make the data folder a git + DVC repository on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / ".git").exists():
        _run(["git", "init", "--quiet"], data_dir)
    if not (data_dir / ".dvc").exists():
        _run(_dvc("init", "--quiet"), data_dir)
        _run(_dvc("config", "core.analytics", "false"), data_dir)
        with (data_dir / ".gitignore").open("a") as ignore:
            ignore.write("rejected/\n.*.tmp\n")
        logger.info("data repository initialised path=%s", data_dir)


def version(data_dir: Path, message: str, remote: str | None = None) -> str | None:
    """`dvc add npy`, commit the pointer and ledger; returns the commit, or None if nothing changed."""
    data_dir = Path(data_dir)
    init_repo(data_dir)
    (data_dir / "npy").mkdir(exist_ok=True)
    _run(_dvc("add", "--quiet", "npy"), data_dir)
    _run(
        [
            "git",
            "add",
            "npy.dvc",
            ".gitignore",
            ".dvc",
            *(["ledger.json"] if (data_dir / "ledger.json").exists() else []),
        ],
        data_dir,
    )
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=data_dir).returncode == 0:
        logger.info("data unchanged, nothing to commit")
        return None
    _run(["git", *GIT_IDENTITY, "commit", "--quiet", "-m", message], data_dir)
    if remote:
        _run(_dvc("remote", "add", "--force", "--default", "storage", remote), data_dir)
        _run(_dvc("push", "--quiet"), data_dir)
    return _run(["git", "rev-parse", "HEAD"], data_dir).strip()


def run(context: StageContext) -> StageOutput:
    commit = version(
        context.settings.data_dir, f"data: pipeline run {context.run_dir.name}", context.settings.dvc_remote
    )
    return {"commit": commit}


if __name__ == "__main__":
    stage_main("version", run)
