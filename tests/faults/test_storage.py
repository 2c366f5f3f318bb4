"""Saving when the disk is full or the folder is read-only: a clear 5xx and nothing half-written.

The faults are real file systems: a tiny tmpfs filled to the brim, and one remounted read-only.
"""

import os
import subprocess

import numpy as np
import pytest
from fastapi.testclient import TestClient

from doodle.api.app import create_app
from doodle.config import settings_under
from tests.utils.fakes import FakeModelClient
from tests.utils.images import b64

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:  # e.g. root in a container without CAP_SYS_ADMIN
        reason = f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder) -> None:
    """Write until the file system refuses."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(4096))
        except OSError:
            pass


def every_file(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture
def drawing(quickdraw_test) -> str:
    return b64(quickdraw_test.images[int(np.argmax(quickdraw_test.images.sum(axis=1)))])  # the most ink


def test_full_disk_answers_507_leaves_nothing_and_recovers(tmp_path, small_disk, drawing):
    store = small_disk / "category"
    (store / "cat").mkdir(parents=True)
    fill(small_disk)
    before = every_file(small_disk)
    settings = settings_under(tmp_path / "var", img_data_location=store)
    with TestClient(create_app(settings, model_client=FakeModelClient())) as backend:
        answer = backend.post("/save-image/", json={"image": drawing, "category": "cat"})
        assert answer.status_code == 507
        assert answer.json() == {"detail": "the drawing was not saved: the storage is full"}
        assert every_file(small_disk) == before  # no partial PNG, no temp file

        (small_disk / "filler").unlink()
        assert backend.post("/save-image/", json={"image": drawing, "category": "cat"}).status_code == 200
    assert len(list((store / "cat").glob("*.png"))) == 1


def test_read_only_folder_answers_503_and_writes_nothing(tmp_path, small_disk, drawing):
    store = small_disk / "category"
    (store / "cat").mkdir(parents=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    settings = settings_under(tmp_path / "var", img_data_location=store)
    with TestClient(create_app(settings, model_client=FakeModelClient())) as backend:
        for category in ("cat", "new_category"):
            answer = backend.post("/save-image/", json={"image": drawing, "category": category})
            assert answer.status_code == 503
            assert answer.json()["detail"] == "the drawing was not saved: storage failed (Read-only file system)"
    assert every_file(small_disk) == ["category", "category/cat"]
    log = (tmp_path / "var" / "logs" / "app.log").read_text()
    assert "drawing not saved category=cat" in log and "Traceback" in log  # the operator sees the cause
