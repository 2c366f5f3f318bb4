"""SIGKILL the data stages before each of their file-system changes, then run again.

After recovery, every labelled drawing must be stored exactly once and no PNG may remain.
"""

import multiprocessing
import os
import pathlib
import shutil
import signal

import pytest

from doodle.drawings import list_drawings
from doodle.pipeline.stages.convert import convert
from doodle.pipeline.stages.merge import merge
from tests.utils.drawings import save_drawings, stored_rows, synthetic_images

pytestmark = pytest.mark.integration


def merge_and_convert(data, img):
    merge(data, img)
    convert(data, img)


def run_killed_at(data, img, kill_at: int) -> None:
    """In a forked child: SIGKILL itself just before its `kill_at`-th rename, unlink or move."""
    calls = 0

    def fatal(function):
        def wrapper(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)

        return wrapper

    os.replace = fatal(os.replace)
    os.rename = fatal(os.rename)
    pathlib.Path.unlink = fatal(pathlib.Path.unlink)
    shutil.move = fatal(shutil.move)
    merge_and_convert(data, img)


def test_data_stages_survive_sigkill_at_every_point(tmp_path):
    images = synthetic_images(11)
    context = multiprocessing.get_context("fork")
    points = 0
    for kill_at in range(1, 200):
        img, data = tmp_path / f"img{kill_at}", tmp_path / f"data{kill_at}"
        expected = save_drawings(img, images[:4], "cat") + save_drawings(img, images[4:6], "kite")
        merge_and_convert(data, img)  # a previous run left rows waiting in new/
        expected += save_drawings(img, images[6:9], "cat") + save_drawings(img, images[9:11], "owl")

        child = context.Process(target=run_killed_at, args=(data, img, kill_at))
        child.start()
        child.join(60)
        killed = child.exitcode == -signal.SIGKILL
        merge_and_convert(data, img)  # the next run recovers

        assert sorted(stored_rows(data)) == sorted(row.tobytes() for row in expected), f"kill_at={kill_at}"
        assert list_drawings(img) == {}
        if not killed:
            assert child.exitcode == 0
            break
        points += 1
    assert points >= 10  # the run really was interrupted at many points
