import subprocess

import pytest

from doodle.pipeline.stages.convert import convert
from doodle.pipeline.stages.version import version
from tests.utils.drawings import save_drawings, synthetic_images

pytestmark = pytest.mark.integration

IMAGES = synthetic_images(12)


def git_log(repo):
    return subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True).stdout.split("\n")


def test_version_commits_dvc_pointer_and_skips_when_unchanged(tmp_path):
    img, data = tmp_path / "img", tmp_path / "data"
    save_drawings(img, IMAGES[:3], "cat")
    convert(data, img)
    first = version(data, "data: run 1")
    assert first is not None
    assert (data / ".dvc").is_dir() and (data / "npy.dvc").is_file()
    tracked = subprocess.run(["git", "ls-files"], cwd=data, capture_output=True, text=True).stdout.split()
    assert "npy.dvc" in tracked and "ledger.json" in tracked
    assert not any(name.endswith(".npy") for name in tracked)
    assert version(data, "data: run 2") is None
    save_drawings(img, IMAGES[3:4], "cat")
    convert(data, img)
    assert version(data, "data: run 3") not in (None, first)
    assert git_log(data)[:2] == ["data: run 3", "data: run 1"]


def test_version_pushes_to_remote(tmp_path):
    img, data, remote = tmp_path / "img", tmp_path / "data", tmp_path / "remote"
    save_drawings(img, IMAGES[:2], "cat")
    convert(data, img)
    version(data, "data: run 1", remote=str(remote))
    assert any(p.is_file() for p in remote.rglob("*"))
