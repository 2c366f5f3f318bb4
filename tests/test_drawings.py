import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from doodle.drawings import StorageError, StorageFullError, WaitingDrawings, list_drawings, save_drawing


def test_save_drawing_writes_png_atomically(tmp_path):
    path = save_drawing(tmp_path, "cat", b"png-bytes")
    assert path.parent == tmp_path / "cat"
    assert path.read_bytes() == b"png-bytes"
    assert [p.name for p in (tmp_path / "cat").iterdir()] == [path.name]


def test_save_drawing_concurrent_saves_never_collide(tmp_path):
    with ThreadPoolExecutor(max_workers=16) as pool:
        paths = list(pool.map(lambda i: save_drawing(tmp_path, "dog", bytes([i % 256]) * 10), range(200)))
    assert len(set(paths)) == 200
    assert len(list_drawings(tmp_path)["dog"]) == 200


@pytest.mark.parametrize(("code", "error"), [(errno.ENOSPC, StorageFullError), (errno.EIO, StorageError)])
def test_save_drawing_that_fails_keeps_nothing(tmp_path, monkeypatch, code, error):
    def failing_rename(source, target):
        raise OSError(code, "refused")

    monkeypatch.setattr("doodle.files.os.replace", failing_rename)
    with pytest.raises(error, match="the drawing was not saved"):
        save_drawing(tmp_path, "cat", b"png-bytes")
    assert list((tmp_path / "cat").iterdir()) == []


def test_list_drawings_skips_temp_files(tmp_path):
    save_drawing(tmp_path, "cat", b"x")
    (tmp_path / "cat" / ".partial.png.tmp").write_bytes(b"half")
    (tmp_path / "cat" / ".partial.png").write_bytes(b"half")
    assert len(list_drawings(tmp_path)["cat"]) == 1


def test_waiting_counts_follow_saves_and_removals_at_once(tmp_path):
    waiting, other_process = WaitingDrawings(tmp_path), WaitingDrawings(tmp_path)
    assert waiting.counts() == {}
    saved = [save_drawing(tmp_path, "cat", b"x") for _ in range(3)]
    save_drawing(tmp_path, "dog", b"x")
    (tmp_path / "cat" / ".partial.png.tmp").write_bytes(b"half")
    (tmp_path / "empty").mkdir()
    assert waiting.counts() == {"cat": 3, "dog": 1}
    save_drawing(tmp_path, "cat", b"x")  # within the same clock tick as the count above, most likely
    assert waiting.counts() == other_process.counts() == {"cat": 4, "dog": 1}
    for path in saved:
        path.unlink()  # as the pipeline's convert stage does
    assert waiting.counts() == {"cat": 1, "dog": 1}


def test_waiting_counts_list_a_folder_again_only_when_it_changed(tmp_path, monkeypatch):
    for category in ("cat", "dog"):
        save_drawing(tmp_path, category, b"x")
    monkeypatch.setattr(WaitingDrawings, "RECENT_NS", 0)  # treat the saves above as long past
    waiting = WaitingDrawings(tmp_path)
    assert waiting.counts() == {"cat": 1, "dog": 1}
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr("doodle.drawings.os.scandir", lambda path: listed.append(Path(path).name) or real_scandir(path))
    assert waiting.counts() == {"cat": 1, "dog": 1}
    assert listed == [tmp_path.name]  # the root only: the category folders did not change
    save_drawing(tmp_path, "dog", b"x")
    listed.clear()
    assert waiting.counts() == {"cat": 1, "dog": 2}
    assert listed == [tmp_path.name, "dog"]
