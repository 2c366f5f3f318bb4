"""What the drawing page says it knows and what waits for training, in real Chromium against a real stack."""

import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from doodle.config import settings_under
from doodle.model.evaluate import predict_proba
from doodle.model.finetune import imprint
from doodle.model.net import load_checkpoint, save_checkpoint
from doodle.model.registry import bootstrap, bundled_checkpoint, configure_mlflow, log_and_register, set_alias
from doodle.stack.catalogue import backend, ui
from doodle.stack.supervisor import stop
from tests.e2e.test_ui import LiveStack, centre_line_paths, split_in_two, sure_drawings, trace
from tests.utils.images import b64
from tests.utils.network import free_port
from tests.utils.services import start_model_server, start_or_fail

pytestmark = pytest.mark.e2e

TRAINING_STARTS_AT = 3  # low, so the tests see the waiting count cross it
NEW_CATEGORIES = ["car", "guitar"]


def start_stack(root: Path, model_url: str, **overrides) -> LiveStack:
    """A backend and the drawing page on free loopback ports, the backend talking to `model_url`."""
    api_port, ui_port = free_port(), free_port()
    settings = settings_under(
        root,
        mlflow_hosted_model_url=model_url,
        cors_origins=[f"http://127.0.0.1:{ui_port}"],
        ui_backend_url=f"http://127.0.0.1:{api_port}",
        **overrides,
    )
    api = start_or_fail(backend(settings, "127.0.0.1", api_port), settings)
    try:
        page_server = start_or_fail(ui(settings, "127.0.0.1", ui_port), settings)
    except BaseException:
        stop([api])
        raise
    return LiveStack(settings, api, page_server)


def open_page(page, live: LiveStack, query: str = "") -> None:
    page.goto(live.ui.url + query)
    page.wait_for_selector("#status[data-state=ready]", timeout=15_000)


def backend_url(live: LiveStack) -> str:
    return live.settings.ui_backend_url


def feedback_count(live: LiveStack, outcome: str, source: str, model_version: str = "1") -> float:
    """doodle_feedback_total{outcome, model_version, source} from the backend's /metrics."""
    wanted = {"outcome": outcome, "model_version": model_version, "source": source}
    for family in text_string_to_metric_families(httpx.get(f"{backend_url(live)}/metrics").text):
        for sample in family.samples:
            if sample.name == "doodle_feedback_total" and sample.labels == wanted:
                return sample.value
    return 0.0


def waits(total: int) -> str:
    return f"{total} drawing waits" if total == 1 else f"{total} drawings wait"


@pytest.fixture(scope="module")
def live(model_server, tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("learning"), model_server, min_new_images=TRAINING_STARTS_AT)
    yield stack
    stop([stack.ui, stack.backend])


@pytest.fixture(scope="module")
def sure(quickdraw_test) -> dict[str, np.ndarray]:
    return sure_drawings(quickdraw_test)


def test_saves_say_what_waits_and_the_panel_follows_the_store(page, live, sure):
    open_page(page, live)
    before = httpx.get(f"{backend_url(live)}/model").json()["waiting"]
    assert before["training_starts_at"] == TRAINING_STARTS_AT
    total, stars = before["total"], before["categories"].get("star", 0)
    trace(page, centre_line_paths(sure["star"]))
    for saved in (1, 2):
        page.fill("#category", "star")
        page.click("#save")
        now = total + saved
        due = "" if now >= TRAINING_STARTS_AT else f", {TRAINING_STARTS_AT - now} more to go"
        expect(page.locator("#save-message")).to_have_text(
            f"Saved as \u201cstar\u201d. {waits(now)} ({stars + saved} of star);"
            f" training starts at {TRAINING_STARTS_AT}{due}.",
            timeout=10_000,
        )
        expect(page.locator("#waiting")).to_have_attribute("data-total", str(now))

    # A drawing saved by another client: the panel learns of it from its GET /model poll.
    answer = httpx.post(
        f"{backend_url(live)}/save-image/", json={"image": b64(sure["fish"].reshape(784)), "category": "fish"}
    )
    assert answer.status_code == 200
    expect(page.locator("#waiting")).to_have_attribute("data-total", str(total + 3), timeout=10_000)
    expect(page.locator("#waiting")).to_have_text(
        f"{waits(total + 3)} for training; a run starts at {TRAINING_STARTS_AT}."
    )


def test_the_page_lists_the_categories_and_version_it_serves(page, live):
    open_page(page, live)
    categories = load_checkpoint(bundled_checkpoint())[1]
    chips = page.locator("#known-categories li")
    expect(chips).to_have_count(len(categories))
    assert chips.all_inner_texts() == [name.replace("_", " ") for name in sorted(categories)]
    assert "smiley face" in chips.all_inner_texts()
    assert page.inner_text("#model-version") == "1"
    assert page.inner_text("#status") == "Model ready (version 1)"
    expect(page.locator("#new-categories")).to_be_hidden()  # the bundled version added nothing
    assert page.inner_text("#announcement") == ""  # a first load announces nothing


def version_with_new_categories(path: Path, quickdraw_new_dir: Path) -> tuple[list[str], np.ndarray]:
    """The bundled model plus imprinted head rows for NEW_CATEGORIES, saved at `path`, without training;
    returns its categories and a car drawing it names first."""
    net, categories, _ = load_checkpoint(bundled_checkpoint())
    categories = categories + NEW_CATEGORIES
    net.grow_head(len(categories))
    drawings = {name: np.load(quickdraw_new_dir / f"{name}.npy", mmap_mode="r") for name in NEW_CATEGORIES}
    for name in NEW_CATEGORIES:
        imprint(net, np.array(drawings[name][:500]), categories.index(name))
    save_checkpoint(path, net, categories, added_categories=NEW_CATEGORIES, added_on="2026-12-06")
    cars = np.array(drawings["car"][500:600])
    proba = predict_proba(net, cars)
    clear_car = np.flatnonzero((proba.argmax(axis=1) == categories.index("car")) & (proba.max(axis=1) >= 0.9))[0]
    return categories, cars[clear_car].reshape(28, 28)


def test_a_promotion_is_announced_without_reload(browser, page, tmp_path, quickdraw_new_dir, screenshots):
    settings = settings_under(tmp_path / "store")
    configure_mlflow(settings)
    bootstrap(settings.model_name, settings.model_alias)
    model_server = start_model_server(settings, free_port(), hot_swap=True)
    phone_context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        stack = start_stack(tmp_path / "stack", model_server.url)
        try:
            phone = phone_context.new_page()
            for shown in (page, phone):
                open_page(shown, stack)
                shown.evaluate("() => { window.notReloaded = true; }")
            categories, car = version_with_new_categories(tmp_path / "v2.pt", quickdraw_new_dir)
            with mlflow.start_run():
                version = log_and_register(tmp_path / "v2.pt", settings.model_name)
            set_alias(settings.model_name, settings.model_alias, version)

            for shown in (page, phone):
                expect(shown.locator("#announcement")).to_have_text("I just learned: car, guitar", timeout=60_000)
                assert shown.evaluate("() => window.notReloaded") is True
                expect(shown.locator("#new-categories")).to_have_text("New: car, guitar (version 2, 6 Dec)")
                expect(shown.locator("#known-categories li")).to_have_count(len(categories))
                expect(shown.locator("#known-categories li.new")).to_have_text(["car", "guitar"])
                assert shown.inner_text("#model-version") == "2"
                assert shown.inner_text("#status") == "Model ready (version 2)"
                assert shown.locator("#categories option[value=car]").count() == 1

            trace(page, centre_line_paths(car))
            page.wait_for_selector("#guesses li[data-label=car]:first-child", timeout=10_000)
            page.screenshot(path=str(screenshots / "learning-panel.png"))
            phone.locator("#learning").scroll_into_view_if_needed()
            phone.screenshot(path=str(screenshots / "learning-panel-phone.png"))
        finally:
            stop([stack.ui, stack.backend])
    finally:
        phone_context.close()
        stop([model_server])


def wait_for_the_models_guesses(page, live: LiveStack) -> list[list[str]]:
    """Waits until the page shows the model's top three for the drawing now on the canvas; returns them."""
    sent = np.array(page.evaluate("() => window.doodle.bytes()"))
    answer = httpx.post(f"{backend_url(live)}/invocations/", json={"inputs": b64(sent)}).json()
    top = zip(answer["predictions"][:3], answer["probabilities"][:3], strict=True)
    expected = [[label, f"{int(np.floor(100 * p + 0.5))}%"] for label, p in top]  # Math.round
    page.wait_for_function(
        "(expected) => JSON.stringify([...document.querySelectorAll('#guesses li[data-label]')]"
        ".map((li) => [li.dataset.label, li.querySelector('.label span:last-child').textContent]))"
        " === JSON.stringify(expected)",
        arg=expected,
        timeout=10_000,
    )
    return expected


def test_undo_removes_the_last_strokes_and_clear_empties_the_canvas(page, live, sure):
    def strokes() -> int:
        return page.evaluate("() => window.doodle.strokes.length")

    def inked() -> bool:
        return page.evaluate(
            "() => { const c = document.getElementById('canvas');"
            " return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v !== 0); }"
        )

    open_page(page, live)
    first_half, second_half = split_in_two(centre_line_paths(sure["house"]))
    trace(page, first_half)
    half_bytes = page.evaluate("() => window.doodle.bytes()")
    half_guesses = wait_for_the_models_guesses(page, live)
    trace(page, second_half)
    assert strokes() == len(first_half) + len(second_half)
    full_guesses = wait_for_the_models_guesses(page, live)
    assert full_guesses != half_guesses

    for left in range(len(second_half) - 1, -1, -1):
        page.click("#undo")
        assert strokes() == len(first_half) + left
    assert page.evaluate("() => window.doodle.bytes()") == half_bytes
    assert wait_for_the_models_guesses(page, live) == half_guesses

    assert inked()
    page.click("#clear")
    assert strokes() == 0
    assert not inked()
    expect(page.locator("#guesses li")).to_have_text(["Start drawing"])
    expect(page.locator("#guesses li.hint")).to_have_count(1)


def test_the_feedback_counter_moves_with_saves_from_the_page(page, live, sure):
    open_page(page, live)
    trace(page, centre_line_paths(sure["star"]))
    page.wait_for_selector("#guesses li[data-label=star]:first-child", timeout=10_000)
    for label, outcome, other in (("star", "agreed", "corrected"), ("fish", "corrected", "agreed")):
        counted, other_counted = feedback_count(live, outcome, "ui"), feedback_count(live, other, "ui")
        page.fill("#category", label)
        page.click("#save")
        expect(page.locator("#save-message")).to_contain_text(f"Saved as \u201c{label}\u201d", timeout=10_000)
        assert feedback_count(live, outcome, "ui") == counted + 1
        assert feedback_count(live, other, "ui") == other_counted


def test_requests_per_minute_idle_and_playing(page, live, sure):
    sent: list[tuple[float, str, str]] = []
    page.on("request", lambda request: sent.append((time.monotonic(), request.method, request.url)))
    open_page(page, live)

    idle_from = time.monotonic()
    page.wait_for_timeout(12_000)
    idle = [(method, url) for at, method, url in sent if at >= idle_from]
    idle_s = time.monotonic() - idle_from
    assert idle and set(idle) == {("GET", f"{backend_url(live)}/model")}
    assert len(idle) <= idle_s / 3 + 1

    in_flight, most_in_flight = 0, 0

    def prediction(change: int):
        def counted(request) -> None:
            nonlocal in_flight, most_in_flight
            if "/invocations" in request.url:
                in_flight += change
                most_in_flight = max(most_in_flight, in_flight)

        return counted

    page.on("request", prediction(+1))
    page.on("requestfinished", prediction(-1))
    page.on("requestfailed", prediction(-1))
    page.click("#mode-play")
    playing_from = time.monotonic()
    for _ in range(6):
        prompt = page.get_attribute("#game", "data-prompt")
        page.click("#start-round")
        for stroke in centre_line_paths(sure[prompt]):  # as a person draws: a short pause between strokes
            if page.get_attribute("#game", "data-stage") != "drawing":
                break
            trace(page, [stroke])
            page.wait_for_timeout(250)
        page.wait_for_selector("#game:not([data-stage=drawing])", timeout=25_000)
    page.wait_for_selector("#game[data-stage=results]")
    playing = [url for at, _, url in sent if at >= playing_from]
    playing_s = time.monotonic() - playing_from
    print(  # noqa: T201
        f"requests per minute: idle {len(idle) / idle_s * 60:.1f} ({len(idle)} in {idle_s:.1f} s),"
        f" playing {len(playing) / playing_s * 60:.1f} ({len(playing)} in {playing_s:.1f} s,"
        f" {sum('/invocations' in url for url in playing)} predictions)"
    )
    assert set(playing) <= {f"{backend_url(live)}/model", f"{backend_url(live)}/invocations/"}
    assert most_in_flight == 1
