import numpy as np
import pytest

from doodle.files import npy_bytes, temp_path, write_atomic


def test_write_atomic_creates_the_folder_and_replaces_the_file(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_atomic(path, b"first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ledger.json"
    write_atomic(path, b"committed")

    def no_rename(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("doodle.files.os.replace", no_rename)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"committed"
    assert not temp_path(path).exists()


def test_temp_path_is_hidden_beside_the_file(tmp_path):
    temp = temp_path(tmp_path / "cat.npy")
    assert temp.parent == tmp_path and temp.name.startswith(".") and temp.name != "cat.npy"


def test_npy_bytes_round_trips(tmp_path):
    rows = np.arange(2 * 784, dtype=np.uint16).reshape(2, 784).astype(np.uint8)
    write_atomic(tmp_path / "rows.npy", npy_bytes(rows))
    loaded = np.load(tmp_path / "rows.npy", allow_pickle=False)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, rows)
