from doodle.pipeline.ledger import load_ledger, npy_path
from doodle.pipeline.stages.convert import convert
from doodle.pipeline.stages.merge import merge
from tests.utils.drawings import save_drawings, stored_rows, synthetic_images

IMAGES = synthetic_images(12)


def test_merge_stacks_new_rows_onto_old_and_creates_categories(tmp_path):
    img, data = tmp_path / "img", tmp_path / "data"
    save_drawings(img, IMAGES[:3], "cat")
    convert(data, img)
    assert merge(data, img) == {"cat": 3}
    save_drawings(img, IMAGES[3:5], "cat")
    save_drawings(img, IMAGES[5:6], "kite")
    convert(data, img)
    assert merge(data, img) == {"cat": 2, "kite": 1}
    ledger = load_ledger(data)
    assert ledger.old == {"cat": 5, "kite": 1}
    assert ledger.new == {"cat": 0, "kite": 0}
    assert not npy_path(data, "new", "cat").exists()
    assert len(set(stored_rows(data))) == 6
    assert merge(data, img) == {}
