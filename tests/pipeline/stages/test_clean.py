from doodle.pipeline.stages.clean import remove_empty_folders


def test_remove_empty_folders_keeps_root_and_non_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"x")
    assert remove_empty_folders(tmp_path) == ["empty"]
    assert tmp_path.exists() and (tmp_path / "cat").exists()
    assert remove_empty_folders(tmp_path / "missing") == []
