import numpy as np

from doodle.files import temp_path
from doodle.pipeline.ledger import (
    Ledger,
    commit,
    committed_categories,
    load_ledger,
    npy_path,
    read_rows,
    recover,
    write_rows,
)


def test_recover_truncates_uncommitted_rows(tmp_path):
    rows = np.arange(5 * 784).astype(np.uint8).reshape(5, 784)
    write_rows(tmp_path, "old", "cat", rows[:3])
    commit(tmp_path, Ledger(old={"cat": 3}))
    write_rows(tmp_path, "old", "cat", rows)  # grown, then a crash before the commit
    recover(tmp_path, tmp_path / "img")
    assert np.array_equal(np.load(npy_path(tmp_path, "old", "cat")), rows[:3])


def test_recover_empties_files_never_committed(tmp_path):
    write_rows(tmp_path, "new", "dog", np.ones((2, 784), np.uint8))
    recover(tmp_path, tmp_path / "img")
    assert read_rows(tmp_path, "new", "dog", 10).shape == (0, 784)


def test_recover_finishes_deleting_consumed_drawings(tmp_path):
    img = tmp_path / "img"
    (img / "cat").mkdir(parents=True)
    (img / "cat" / "a.png").write_bytes(b"x")
    (img / "cat" / "b.png").write_bytes(b"y")
    commit(tmp_path, Ledger(consumed=["cat/a.png"]))
    recover(tmp_path, img)
    assert [p.name for p in (img / "cat").iterdir()] == ["b.png"]
    assert load_ledger(tmp_path).consumed == []


def test_recover_removes_temp_files_left_by_a_crash(tmp_path):
    write_rows(tmp_path, "new", "cat", np.ones((1, 784), np.uint8))
    commit(tmp_path, Ledger(new={"cat": 1}))
    temp = temp_path(npy_path(tmp_path, "new", "dog"))
    temp.write_bytes(b"half a file")
    recover(tmp_path, tmp_path / "img")
    assert not temp.exists()
    assert read_rows(tmp_path, "new", "cat", 1).shape == (1, 784)


def test_committed_categories_are_those_with_committed_rows(tmp_path):
    assert committed_categories(tmp_path) == set()
    commit(tmp_path, Ledger(old={"cat": 3, "emptied": 0}, new={"cat": 0, "kite": 2}))
    write_rows(tmp_path, "new", "uncommitted", np.ones((1, 784), np.uint8))  # a crash before its commit
    assert committed_categories(tmp_path) == {"cat", "kite"}
