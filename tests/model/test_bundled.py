"""The committed base model, measured on real Quick Draw drawings it never saw."""

import numpy as np
import pytest
from PIL import Image

from doodle.imaging import normalize_drawing
from doodle.model.evaluate import predict_proba, report_from_proba
from doodle.model.net import load_checkpoint
from doodle.model.registry import bundled_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint(bundled_checkpoint())


def test_bundled_model_is_small_and_knows_all_categories(bundled, quickdraw_dir):
    _, categories, _ = bundled
    assert bundled_checkpoint().stat().st_size < 8 * 1024 * 1024  # weights 1.5 MB, replay drawings 4.9 MB
    assert categories == sorted(p.stem for p in quickdraw_dir.glob("*.npy"))


def test_bundled_model_accuracy_on_held_out_split(bundled, quickdraw_test):
    # The goal is 94% top-1 and 98.5% top-3; the bundled model reaches 93.79% and 97.71%.
    # These floors catch a regression (or a wrong file) without claiming the goal is met.
    net, categories, _ = bundled
    assert quickdraw_test.categories == categories
    report = report_from_proba(predict_proba(net, quickdraw_test.images), quickdraw_test.labels, categories)
    assert report.top1 >= 0.935
    assert report.top3 >= 0.975


def shrink_off_centre(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Redraw each bitmap at 14-18 px somewhere on the 28x28 canvas, as a hurried user might."""
    out = np.zeros_like(images).reshape(-1, 28, 28)
    for bitmap, target in zip(images.reshape(-1, 28, 28), out, strict=True):
        side = int(rng.integers(14, 19))
        small = np.asarray(Image.fromarray(bitmap).resize((side, side), Image.Resampling.BILINEAR))
        top, left = rng.integers(0, 28 - side, size=2)
        target[top : top + side, left : left + side] = small
    return out.reshape(-1, 784)


def test_normalisation_recovers_accuracy_on_small_offcentre_drawings(bundled, quickdraw_test):
    net, categories, _ = bundled
    rng = np.random.default_rng(0)
    picks = rng.choice(len(quickdraw_test), size=1500, replace=False)
    labels = quickdraw_test.labels[picks]
    distorted = shrink_off_centre(quickdraw_test.images[picks], rng)
    restored = np.stack([normalize_drawing(d.reshape(28, 28)).reshape(784) for d in distorted])

    naive = report_from_proba(predict_proba(net, distorted), labels, categories).top1
    normalised = report_from_proba(predict_proba(net, restored), labels, categories).top1
    assert naive < 0.5  # the distortion really hurts: about 41% here
    assert normalised >= naive + 0.3
    assert normalised >= 0.8
