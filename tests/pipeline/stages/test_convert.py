import numpy as np
import pytest

from doodle.drawings import list_drawings, save_drawing
from doodle.imaging import to_png
from doodle.pipeline.ledger import load_ledger
from doodle.pipeline.stages import convert as convert_stage
from doodle.pipeline.stages.convert import convert
from tests.utils.drawings import save_drawings, stored_rows, synthetic_images

IMAGES = synthetic_images(12)


def test_convert_turns_pngs_into_rows_and_deletes_them(tmp_path):
    img, data = tmp_path / "img", tmp_path / "data"
    expected = save_drawings(img, IMAGES[:7], "cat") + save_drawings(img, IMAGES[7:10], "new_thing")
    assert convert(data, img) == {"cat": 7, "new_thing": 3}
    assert sorted(stored_rows(data)) == sorted(row.tobytes() for row in expected)
    assert list_drawings(img) == {}
    assert load_ledger(data).new == {"cat": 7, "new_thing": 3}


def test_convert_resizes_large_pngs_to_28x28(tmp_path):
    img, data = tmp_path / "img", tmp_path / "data"
    canvas = np.zeros((300, 200), np.uint8)
    canvas[50:250, 40:160] = 255
    save_drawing(img, "box", to_png(canvas))
    convert(data, img)
    (row,) = stored_rows(data)
    assert len(row) == 784


def test_convert_keeps_drawing_saved_while_it_runs(tmp_path, monkeypatch):
    img, data = tmp_path / "img", tmp_path / "data"
    save_drawings(img, IMAGES[:3], "cat")
    real_to_row, late = convert_stage.to_row, []

    def to_row_while_user_saves(path):
        if not late:
            late.append(save_drawing(img, "cat", to_png(IMAGES[5].reshape(28, 28))))
        return real_to_row(path)

    monkeypatch.setattr(convert_stage, "to_row", to_row_while_user_saves)
    assert convert(data, img) == {"cat": 3}
    assert late[0].exists()
    assert list_drawings(img)["cat"] == late


def test_convert_quarantines_corrupt_png_and_continues(tmp_path):
    img, data = tmp_path / "img", tmp_path / "data"
    save_drawings(img, IMAGES[:2], "cat")
    save_drawing(img, "cat", b"\x89PNG definitely not a png")
    assert convert(data, img) == {"cat": 2}
    assert len(list((data / "rejected" / "cat").iterdir())) == 1


@pytest.mark.parametrize("runs", [2])
def test_convert_is_idempotent(tmp_path, runs):
    img, data = tmp_path / "img", tmp_path / "data"
    save_drawings(img, IMAGES[:4], "cat")
    results = [convert(data, img) for _ in range(runs)]
    assert results == [{"cat": 4}, {}]
    assert len(stored_rows(data)) == 4
