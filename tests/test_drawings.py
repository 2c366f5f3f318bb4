import errno
from concurrent.futures import ThreadPoolExecutor

import pytest

from doodle.drawings import StorageError, StorageFullError, list_drawings, save_drawing


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
