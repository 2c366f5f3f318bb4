import numpy as np

from doodle.pipeline.ledger import Ledger, commit, load_ledger, npy_path, read_rows, recover, write_rows


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
