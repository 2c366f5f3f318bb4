"""Stage 7 removes empty folders while the backend keeps saving into them: neither side fails."""

import threading

import pytest

from doodle.drawings import list_drawings, save_drawing
from doodle.pipeline.stages.clean import remove_empty_folders

pytestmark = pytest.mark.integration


def test_saves_and_folder_cleaning_race_without_failures_or_losses(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    stop = threading.Event()
    clean_errors: list[Exception] = []

    def clean_repeatedly() -> None:
        while not stop.is_set():
            try:
                remove_empty_folders(root)
            except Exception as error:  # the run would fail after promoting its model
                clean_errors.append(error)

    cleaner = threading.Thread(target=clean_repeatedly)
    cleaner.start()
    saved = []
    try:
        for n in range(2000):
            category = f"c{n % 4}"
            path = save_drawing(root, category, b"png %d" % n)
            saved.append(path)
            if n % 2:  # the pipeline consumed it: the folder may be empty again
                path.unlink()
                saved.pop()
    finally:
        stop.set()
        cleaner.join()
    assert clean_errors == []
    assert sorted(p for pngs in list_drawings(root).values() for p in pngs) == sorted(saved)
