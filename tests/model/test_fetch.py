"""`doodle data fetch`, offline: a local HTTP server plays Google's bucket, serving random rows in Google's format."""

import functools
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from doodle.model.data import list_categories, load_dataset
from doodle.model.fetch import AVAILABLE_ROWS, FetchError, category_url, fetch
from doodle.model.net import DoodleNet, NetConfig, checkpoint_categories, load_checkpoint, save_checkpoint
from doodle.model.registry import bundled_checkpoint
from tests.utils.drawings import synthetic_images
from tests.utils.network import free_port


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def bucket(tmp_path):
    """A folder served over HTTP with Google's file names ("smiley face.npy"), 500 rows each; yields (folder, URL)."""
    folder = tmp_path / "bucket"
    folder.mkdir()
    for seed, category in enumerate(("cat", "smiley_face")):
        np.save(folder / f"{category.replace('_', ' ')}.npy", synthetic_images(500, seed))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def files_in(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_category_url_uses_googles_spelling():
    assert category_url("https://x/numpy_bitmap/", "smiley_face") == "https://x/numpy_bitmap/smiley%20face.npy"
    assert category_url("https://x/numpy_bitmap", "cat") == "https://x/numpy_bitmap/cat.npy"


def test_checkpoint_categories_match_the_loaded_checkpoint(tmp_path):
    path = tmp_path / "small.pt"
    bank = {"features": torch.zeros(2, 4).half(), "labels": torch.zeros(2, dtype=torch.int64)}
    save_checkpoint(path, DoodleNet(NetConfig(num_classes=3, width=8)), ["kite", "owl", "sun"], replay=bank, note="x")
    assert checkpoint_categories(path) == load_checkpoint(path)[1]
    assert checkpoint_categories(bundled_checkpoint()) == load_checkpoint(bundled_checkpoint())[1]


@pytest.mark.integration
def test_cli_fetches_the_first_rows_of_each_category_ready_for_training(bucket, tmp_path):
    folder, url = bucket
    out = tmp_path / "fetched"
    done = subprocess.run(
        [sys.executable, "-m", "doodle.cli", "data", "fetch", "Smiley Face", "cat", "--rows", "300", "--out", str(out)],
        env={**os.environ, "QUICKDRAW_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert files_in(out) == sorted([AVAILABLE_ROWS, "cat.npy", "smiley_face.npy"])
    for category in ("cat", "smiley_face"):
        served = np.load(folder / f"{category.replace('_', ' ')}.npy")
        assert np.array_equal(np.load(out / f"{category}.npy"), served[:300])
    assert list_categories(out) == ["cat", "smiley_face"]
    assert len(load_dataset(out, "train")) == 2 * 240


@pytest.mark.integration
def test_asking_for_more_rows_than_exist_saves_all_there_are(bucket, tmp_path):
    _, url = bucket
    (saved,) = fetch(["cat"], tmp_path / "out", rows=10_000, base_url=url)
    assert np.load(saved).shape == (500, 784)


@pytest.mark.integration
def test_a_category_with_fewer_rows_than_asked_is_complete_and_kept(bucket, tmp_path):
    folder, url = bucket
    out = tmp_path / "out"
    (saved,) = fetch(["cat"], out, rows=10_000, base_url=url)
    assert (out / AVAILABLE_ROWS).exists()
    (folder / "cat.npy").unlink()  # a download now would fail
    assert fetch(["cat"], out, rows=10_000, base_url=url) == [saved]
    assert np.load(saved).shape == (500, 784)


@pytest.mark.integration
def test_a_category_already_fetched_is_kept_without_downloading(bucket, tmp_path):
    folder, url = bucket
    out = tmp_path / "out"
    fetch(["cat"], out, rows=200, base_url=url)
    (folder / "cat.npy").unlink()
    (kept,) = fetch(["cat"], out, rows=200, base_url=url)
    assert np.load(kept).shape == (200, 784)
    with pytest.raises(FetchError, match="no such Quick, Draw! category"):
        fetch(["cat"], out, rows=400, base_url=url)  # more rows than on disk: downloads again
    assert np.load(kept).shape == (200, 784)  # and a failure leaves the old file as it was


@pytest.mark.integration
def test_unknown_category_is_a_clear_error_and_writes_nothing(bucket, tmp_path):
    _, url = bucket
    out = tmp_path / "out"
    with pytest.raises(FetchError, match=r"unicorn: no such Quick, Draw! category \(.*unicorn.npy answered 404\)"):
        fetch(["unicorn"], out, rows=10, base_url=url)
    assert files_in(out) == []


@pytest.mark.integration
def test_a_file_that_is_not_npy_is_refused_and_writes_nothing(bucket, tmp_path):
    folder, url = bucket
    (folder / "cat.npy").write_text("<html>Service temporarily unavailable</html>" * 10)
    out = tmp_path / "out"
    with pytest.raises(FetchError, match="cat.npy is not a .npy file"):
        fetch(["cat"], out, rows=10, base_url=url)
    assert files_in(out) == []


@pytest.mark.integration
def test_a_file_of_other_shape_is_refused(bucket, tmp_path):
    folder, url = bucket
    np.save(folder / "cat.npy", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(FetchError, match=r"expected uint8 rows of 784 pixels, got uint8 \(5, 28, 28\)"):
        fetch(["cat"], tmp_path / "out", rows=10, base_url=url)


@pytest.mark.integration
def test_a_download_cut_short_is_refused_and_leaves_no_partial_file(bucket, tmp_path):
    folder, url = bucket
    whole = (folder / "cat.npy").read_bytes()
    (folder / "cat.npy").write_bytes(whole[: len(whole) // 2])  # header still promises 500 rows
    out = tmp_path / "out"
    with pytest.raises(FetchError, match="cat: the download stopped after"):
        fetch(["cat"], out, rows=400, base_url=url)
    assert files_in(out) == []


@pytest.mark.integration
def test_an_unreachable_server_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(FetchError, match=r"cat: cannot download http://127\.0\.0\.1:\d+/cat\.npy"):
        fetch(["cat"], tmp_path / "out", rows=10, base_url=url)


@pytest.mark.integration
def test_cli_reports_bad_names_and_failures_without_a_traceback(bucket, tmp_path):
    _, url = bucket
    for args, message in (
        (["../etc"], "category must be 1-64 characters"),
        (["cat", "--rows", "0"], "rows must be at least 1"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "doodle.cli", "data", "fetch", *args, "--out", str(tmp_path / "out")],
            env={**os.environ, "QUICKDRAW_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1
        assert message in done.stderr and "Traceback" not in done.stderr
