"""Hostile saves through the backend: every one gets a clear 4xx and writes nothing."""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from doodle.api.app import create_app
from doodle.config import settings_under
from tests.utils.craft import b64, encoded, jpeg_claiming, png_claiming, png_with_chunk_length
from tests.utils.fakes import FakeModelClient
from tests.utils.images import b64 as bitmap_b64

JSON = {"content-type": "application/json"}


def everything_under(root) -> list:
    return sorted(root.rglob("*")) if root.exists() else []


def store_of(client):
    return client.app.state.settings.img_data_location


def error_message(response) -> str:
    """What a client can show: the JSON `detail`, 422's list joined."""
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in detail)
    return detail


def post_raw(client, path: str, body: str | bytes, headers=JSON):
    return client.post(path, content=body, headers=headers)


@pytest.fixture(scope="module")
def drawing() -> str:
    """A real drawing, so the category is the only thing wrong."""
    bitmap = np.zeros((28, 28), np.uint8)
    bitmap[4:24, 6] = 255
    bitmap[4, 6:22] = 255
    return bitmap_b64(bitmap)


# --- hostile category names -------------------------------------------------------------------------------------

PATH_TRAVERSAL = [
    "../etc",
    "../../../../tmp/pwned",
    "a/b",
    "..\\..\\windows",
    "%2e%2e%2fetc",
    "/etc/passwd",
    "C:\\temp",
    "\\\\server\\share",
    "./cat",
    "cat/",
    ".hidden",
    "cat.png",
]
UNICODE_TRICKS = {
    "fullwidth letters": "\uff43\uff41\uff54",
    "zero-width joiner": "ca\u200dt",
    "zero-width space": "ca\u200bt",
    "right-to-left override": "\u202egnp.tac",
    "cyrillic a": "c\u0430t",
    "nul byte": "cat\x00",
    "nul then traversal": "cat\x00/../../x",
    "newline": "cat\n",
    "header injection": "cat\r\nX-Evil: 1",
    "tab": "cat\tdog",
    "no-break space": "smiley\u00a0face",
    "fi ligature": "\ufb01sh",
    "kelvin sign": "\u212aite",
    "combining accent": "cafe\u0301",
    "emoji": "cat\U0001f431",
    "ideographic space": "\u3000",
}
BLANK = ["", " ", "   ", "\t\n", "_", "-", "_-_ "]


@pytest.mark.parametrize(
    ("category", "status"),
    [(name, 400) for name in PATH_TRAVERSAL]
    + [pytest.param(name, 400, id=label) for label, name in UNICODE_TRICKS.items()]
    + [pytest.param(name, 400, id=f"blank-{i}") for i, name in enumerate(BLANK)]
    + [
        pytest.param("a" * 65, 400, id="65 chars"),
        pytest.param("word " * 200, 400, id="1000 chars"),
        pytest.param("a" * 1001, 422, id="1001 chars"),
        pytest.param("a" * 100_000, 422, id="100000 chars"),
        pytest.param(5, 422, id="number"),
        pytest.param(None, 422, id="null"),
        pytest.param(["cat"], 422, id="list"),
        pytest.param({"name": "cat"}, 422, id="object"),
        pytest.param("\ud800", 422, id="lone surrogate"),
    ],
)
def test_save_refuses_hostile_category_and_writes_nothing(api_client, drawing, category, status):
    answer = post_raw(api_client, "/save-image/", json.dumps({"image": drawing, "category": category}))
    assert answer.status_code == status
    assert "category" in error_message(answer)
    assert everything_under(store_of(api_client)) == []


def test_spellings_of_one_name_share_one_folder_and_do_not_use_up_the_category_limit(tmp_path, drawing):
    app = create_app(settings_under(tmp_path, max_categories=1), model_client=FakeModelClient())
    spellings = ["Cat", "CAT", " cat ", "cat_", "_cat", "-cat-", "cat"]
    with TestClient(app) as backend:
        answers = [backend.post("/save-image/", json={"image": drawing, "category": name}) for name in spellings]
        assert [a.status_code for a in answers] == [200] * len(spellings)
        root = store_of(backend)
        assert [p.name for p in root.iterdir()] == ["cat"]
        assert len(list((root / "cat").iterdir())) == len(spellings)


# --- absurd images ----------------------------------------------------------------------------------------------


NOISE = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)  # does not compress


def canvas_png(height: int, width: int) -> str:
    ink = np.zeros((height, width), np.uint8)
    ink[0, :] = 255
    return b64(encoded(ink))


@pytest.mark.parametrize(
    ("image", "status", "message"),
    [
        pytest.param(canvas_png(1, 100_000), 400, "too large", id="100000x1 PNG"),
        pytest.param(canvas_png(1, 4097), 400, "too large", id="4097x1 PNG"),
        pytest.param(b64(png_claiming(65_535, 65_535)), 400, "too large", id="PNG claiming 65535x65535"),
        pytest.param(b64(png_claiming(2**31 - 1, 2**31 - 1)), 400, "too large", id="PNG claiming 2^31x2^31"),
        pytest.param(b64(png_claiming(20_000, 20_000)), 400, "too large", id="PNG claiming 20000x20000"),
        pytest.param(b64(jpeg_claiming(65_500, 65_500)), 400, "too large", id="JPEG claiming 65500x65500"),
        pytest.param(b64(encoded(np.zeros((300, 300), np.uint8))), 400, "empty", id="blank canvas PNG"),
        pytest.param(b64(encoded(NOISE)[:500]), 400, "PNG/JPEG", id="truncated PNG"),
        pytest.param(b64(png_with_chunk_length(b"IHDR", 5)), 400, "PNG/JPEG", id="PNG with short header"),
        pytest.param(b64(png_with_chunk_length(b"IDAT", 7)), 400, "PNG/JPEG", id="PNG with wrong chunk length"),
        pytest.param(b64(encoded(np.ones((30, 30), np.uint8), "GIF")), 400, "PNG/JPEG", id="GIF"),
        pytest.param(b64(encoded(np.ones((30, 30), np.uint8), "BMP")), 400, "PNG/JPEG", id="BMP"),
        pytest.param(b64(b"<svg onload=alert(1)>"), 400, "PNG/JPEG", id="SVG"),
        pytest.param("data:text/html;base64,PHNjcmlwdD4=", 400, "base64", id="HTML data URL"),
        pytest.param("A" * 3_999_996, 400, "PNG/JPEG", id="4 MB of base64 zeros"),
        pytest.param("A" * 4_000_004, 422, "image", id="over the image length limit"),
    ],
)
def test_save_refuses_absurd_image_and_writes_nothing(api_client, image, status, message):
    answer = api_client.post("/save-image/", json={"image": image, "category": "cat"})
    assert answer.status_code == status
    assert message in error_message(answer)
    assert everything_under(store_of(api_client)) == []


def test_save_accepts_long_thin_drawing_at_the_side_limit(api_client):
    answer = api_client.post("/save-image/", json={"image": canvas_png(3, 4096), "category": "line"})
    assert answer.status_code == 200
    assert [p.name for p in everything_under(store_of(api_client)) if p.is_dir()] == ["line"]


def assert_refused_as_too_large(api_client, answer) -> None:
    """A 413 whose JSON names the limit, and nothing stored."""
    assert answer.status_code == 413
    message = error_message(answer)
    assert "too large" in message and f"{api_client.app.state.settings.max_request_bytes} bytes" in message
    assert everything_under(store_of(api_client)) == []


@pytest.mark.parametrize("path", ["/save-image/", "/invocations/"])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps({"image": "A" * 5_000_000, "category": "cat", "inputs": "A"}), id="5 MB JSON"),
        pytest.param(b"\x00" * 6_000_000, id="6 MB of NUL"),
    ],
)
def test_body_over_the_cap_gets_413_naming_the_limit_and_writes_nothing(api_client, path, body):
    assert len(body) > api_client.app.state.settings.max_request_bytes
    assert_refused_as_too_large(api_client, post_raw(api_client, path, body))


@pytest.mark.parametrize("path", ["/save-image/", "/invocations/"])
def test_streamed_body_over_the_cap_gets_413_and_writes_nothing(api_client, path):
    """A chunked body declares no length: the bytes are counted as they arrive."""
    limit = api_client.app.state.settings.max_request_bytes
    chunks = (b"\x00" * 100_000 for _ in range(limit // 100_000 + 10))
    assert_refused_as_too_large(api_client, post_raw(api_client, path, chunks))


# --- malformed JSON ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/save-image/", "/invocations/"])
@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param('{"image": NaN, "category": "cat", "inputs": NaN}', 422, id="NaN"),
        pytest.param('{"image": Infinity, "category": "cat", "inputs": -Infinity}', 422, id="infinity"),
        pytest.param('{"image": 1e999, "category": "cat", "inputs": 1e999}', 422, id="1e999"),
        pytest.param('{"image": [NaN], "category": "cat", "inputs": [NaN]}', 422, id="NaN in list"),
        pytest.param(json.dumps({"image": 10**400, "category": "cat", "inputs": 10**400}), 422, id="huge integer"),
        pytest.param(json.dumps({"image": -1, "category": 256, "inputs": [-1, 256]}), 422, id="negative and 256"),
        pytest.param(
            json.dumps({"image": [[0] * 28] * 28, "category": "cat", "inputs": [[0] * 784]}), 422, id="pixels"
        ),
        pytest.param(json.dumps({"image": {"$ne": 1}, "category": {"a": [{}]}, "inputs": {"b": None}}), 422, id="junk"),
        pytest.param('{"image": ' + "[" * 50_000 + "]" * 50_000 + "}", 400, id="nested 50000 deep"),
        pytest.param("{{{", 422, id="not JSON"),
        pytest.param("", 422, id="empty body"),
        pytest.param('"just a string"', 422, id="string body"),
        pytest.param(b'\xff\xfe{"image": 1}', 422, id="invalid UTF-8"),
    ],
)
def test_malformed_json_gets_clear_4xx_and_writes_nothing(api_client, path, body, status):
    answer = post_raw(api_client, path, body)
    assert answer.status_code == status
    assert error_message(answer)
    assert everything_under(store_of(api_client)) == []


def test_non_json_content_types_get_422_and_write_nothing(api_client, drawing):
    form = api_client.post("/save-image/", data={"image": drawing, "category": "cat"})
    text = post_raw(
        api_client, "/save-image/", json.dumps({"image": drawing, "category": "cat"}), {"content-type": "x/y"}
    )
    assert (form.status_code, text.status_code) == (422, 422)
    assert error_message(form) and error_message(text)
    assert everything_under(store_of(api_client)) == []


# --- the category limit -----------------------------------------------------------------------------------------


def limited_backend(tmp_path, limit: int) -> TestClient:
    return TestClient(create_app(settings_under(tmp_path, max_categories=limit), model_client=FakeModelClient()))


def test_category_limit_refuses_new_category_but_keeps_saving_to_existing_ones(tmp_path, drawing):
    with limited_backend(tmp_path, 5) as backend:
        root = store_of(backend)
        for n in range(5):
            assert backend.post("/save-image/", json={"image": drawing, "category": f"thing {n}"}).status_code == 200
        before = everything_under(root)

        refused = backend.post("/save-image/", json={"image": drawing, "category": "one too many"})

        assert refused.status_code == 400
        assert "too many categories" in error_message(refused)
        assert everything_under(root) == before
        again = backend.post("/save-image/", json={"image": drawing, "category": "Thing 3"})
        assert again.status_code == 200
        assert sorted(p.name for p in root.iterdir()) == [f"thing_{n}" for n in range(5)]
        assert len(list((root / "thing_3").iterdir())) == 2


def test_thousands_of_new_categories_stop_at_the_limit(tmp_path, drawing):
    names = [f"label {n:04d}" for n in range(2000)]
    with limited_backend(tmp_path, 50) as backend:
        answers = [backend.post("/save-image/", json={"image": drawing, "category": name}) for name in names]
        root = store_of(backend)
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 50 + [400] * 1950
    assert all("too many categories" in a.json()["detail"] for a in answers[50:])
    folders = sorted(root.iterdir())
    assert [p.name for p in folders] == [f"label_{n:04d}" for n in range(50)]
    assert all(len(list(folder.iterdir())) == 1 for folder in folders)


def test_parallel_new_categories_do_not_overshoot_the_limit(tmp_path, drawing):
    with limited_backend(tmp_path, 20) as backend:

        def save(n):
            return backend.post("/save-image/", json={"image": drawing, "category": f"parallel {n}"}).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(save, range(200)))
        root = store_of(backend)
    assert statuses.count(200) == 20 and statuses.count(400) == 180
    assert len(list(root.iterdir())) == 20
