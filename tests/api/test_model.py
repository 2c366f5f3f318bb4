"""GET /model and what a save tells: the served model, the drawings waiting, and feedback counts."""

import time

from fastapi.testclient import TestClient

from doodle.api.app import create_app
from doodle.config import settings_under
from tests.utils.drawings import synthetic_images
from tests.utils.fakes import FakeModelClient
from tests.utils.images import b64

DRAWINGS = synthetic_images(6)


def feedback(client: TestClient, **labels: str) -> float:
    return client.app.state.metrics.registry.get_sample_value("doodle_feedback_total", labels) or 0.0


def test_model_names_version_categories_and_what_it_added(api_client, fake_model):
    fake_model.model_version, fake_model.added_categories, fake_model.added_on = "3", ["dog"], "2026-12-06"
    body = api_client.get("/model").json()
    assert body == {
        "version": "3",
        "categories": sorted(fake_model.categories),
        "added_categories": ["dog"],
        "added_on": "2026-12-06",
        "waiting": {"total": 0, "categories": {}, "training_starts_at": 10},
    }


def test_model_answers_503_while_the_model_server_is_down(api_client, fake_model):
    fake_model.down = True
    answer = api_client.get("/model")
    assert answer.status_code == 503
    assert "model server" in answer.json()["detail"]
    fake_model.down = False
    time.sleep(2.1)  # past the probe's cache
    assert api_client.get("/model").status_code == 200


def test_polling_pages_share_one_model_probe(api_client, fake_model):
    for _ in range(20):
        assert api_client.get("/model").status_code == 200
    assert len(fake_model.calls) == 1


def test_waiting_counts_agree_across_backend_replicas_that_share_the_store(tmp_path):
    settings = settings_under(tmp_path, min_new_images=4)
    replicas = [TestClient(create_app(settings, model_client=FakeModelClient())) for _ in range(2)]
    with replicas[0] as first, replicas[1] as second:
        answers = [
            (first if n % 2 else second).post("/save-image/", json={"image": b64(drawing), "category": category})
            for n, (drawing, category) in enumerate(zip(DRAWINGS[:5], ["cat", "cat", "dog", "cat", "Dog"], strict=True))
        ]
        assert [a.json()["waiting"]["total"] for a in answers] == [1, 2, 3, 4, 5]
        assert answers[-1].json()["waiting"] == {
            "total": 5,
            "categories": {"cat": 3, "dog": 2},
            "training_starts_at": 4,
        }
        for replica in (first, second):
            assert replica.get("/model").json()["waiting"]["categories"] == {"cat": 3, "dog": 2}
        for png in (settings.img_data_location / "cat").glob("*.png"):
            png.unlink()  # the pipeline, in another process, took them
        assert second.get("/model").json()["waiting"]["categories"] == {"dog": 2}


def test_saves_count_whether_the_label_agreed_with_the_served_model(api_client, fake_model):
    fake_model.model_version = "7"  # the fake ranks "cat" first for any drawing
    for category, source in [("cat", "ui"), ("dog", "ui"), ("cat", "game"), ("star", "game"), ("star", None)]:
        body = {"image": b64(DRAWINGS[0]), "category": category} | ({"source": source} if source else {})
        assert api_client.post("/save-image/", json=body).status_code == 200
    assert feedback(api_client, outcome="agreed", model_version="7", source="ui") == 1
    assert feedback(api_client, outcome="corrected", model_version="7", source="ui") == 1
    assert feedback(api_client, outcome="agreed", model_version="7", source="game") == 1
    assert feedback(api_client, outcome="corrected", model_version="7", source="game") == 1
    assert feedback(api_client, outcome="corrected", model_version="7", source="api") == 1


def test_save_with_the_model_server_down_keeps_the_drawing_and_counts_no_feedback(api_client, fake_model, settings):
    fake_model.down = True
    answer = api_client.post("/save-image/", json={"image": b64(DRAWINGS[0]), "category": "cat", "source": "ui"})
    assert answer.status_code == 200
    assert answer.json()["waiting"]["total"] == 1
    assert len(list((settings.img_data_location / "cat").glob("*.png"))) == 1
    counted = [m.samples for m in api_client.app.state.metrics.registry.collect() if m.name == "doodle_feedback"]
    assert counted == [[]]


def test_save_rejects_an_unknown_source(api_client, settings):
    answer = api_client.post("/save-image/", json={"image": b64(DRAWINGS[0]), "category": "cat", "source": "bot"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "source"]
    assert not settings.img_data_location.exists() or not any(settings.img_data_location.rglob("*.png"))


def test_model_reports_the_bundled_model_behind_the_stock_model_server(client, quickdraw_dir):
    body = client.get("/model").json()
    assert body["version"] == "1"
    assert body["categories"] == sorted(path.stem for path in quickdraw_dir.glob("*.npy"))
    assert (body["added_categories"], body["added_on"]) == ([], None)  # the base model added nothing
