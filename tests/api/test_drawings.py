"""POST /save-image/ through the backend app; saving never depends on the model server."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from doodle.api.app import create_app
from doodle.config import settings_under
from tests.utils.drawings import synthetic_images
from tests.utils.fakes import FakeModelClient
from tests.utils.images import b64

DRAWINGS = synthetic_images(40)


def all_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_save_image_stores_normalised_png(api_client, settings):
    answer = api_client.post("/save-image/", json={"image": b64(DRAWINGS[0]), "category": "Smiley Face"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["message"] == "Image saved successfully"
    assert body["category"] == "smiley_face"
    (saved,) = all_files(settings.img_data_location)
    assert saved.parent.name == "smiley_face" and saved.suffix == ".png"
    pixels = np.asarray(Image.open(saved))
    assert pixels.shape == (28, 28) and pixels.max() == 255


@pytest.mark.parametrize(
    "category",
    ["../../etc", "..", "/tmp/x", "cat/../../x", "a\\b", "cat\x00", "%2e%2e", "кот", "", "x" * 65, "..."],
)
def test_save_image_rejects_path_escape_and_bad_names(api_client, settings, category):
    answer = api_client.post("/save-image/", json={"image": b64(DRAWINGS[0]), "category": category})
    assert answer.status_code == 400
    assert "category" in answer.json()["detail"]
    written = [p for p in all_files(settings.var_dir) if "logs" not in p.parts]
    assert written == []


@pytest.mark.parametrize("image", ["###", b64(np.zeros(784, np.uint8)), b64(np.ones(10, np.uint8))])
def test_save_image_rejects_bad_image_and_writes_nothing(api_client, settings, image):
    answer = api_client.post("/save-image/", json={"image": image, "category": "cat"})
    assert answer.status_code == 400
    assert all_files(settings.img_data_location) == []


def test_save_image_parallel_saves_give_one_file_each(api_client, settings):
    count = 40

    def save(i):
        return api_client.post("/save-image", json={"image": b64(DRAWINGS[i]), "category": "cat"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(save, range(count)))
    assert [a.status_code for a in answers] == [200] * count
    files = all_files(settings.img_data_location / "cat")
    assert len(files) == count
    assert len({a.json()["filename"] for a in answers}) == count


def test_api_token_guards_saves_only_when_set(tmp_path):
    image = {"image": b64(DRAWINGS[0]), "category": "cat"}
    protected = settings_under(tmp_path / "protected", api_token="s3cret-token")
    with TestClient(create_app(protected, model_client=FakeModelClient())) as backend:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            answer = backend.post("/save-image/", json=image, headers=headers)
            assert answer.status_code == 401
            assert answer.json() == {"detail": "missing or wrong API token"}
        assert not protected.img_data_location.exists()
        good = backend.post("/save-image/", json=image, headers={"Authorization": "Bearer s3cret-token"})
        assert good.status_code == 200
    assert len(list((protected.img_data_location / "cat").glob("*.png"))) == 1

    for name, token in (("unset", None), ("empty", "")):  # off by default for local use; compose passes ""
        backend_settings = settings_under(tmp_path / name, api_token=token)
        with TestClient(create_app(backend_settings, model_client=FakeModelClient())) as backend:
            assert backend.post("/save-image/", json=image).status_code == 200
