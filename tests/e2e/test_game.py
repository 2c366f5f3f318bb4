"""The game, as in Quick, Draw!, in real Chromium against the real backend and model server."""

import numpy as np
import pytest
from playwright.sync_api import expect

from doodle.drawings import list_drawings
from doodle.stack.supervisor import stop
from tests.e2e.test_learning_page import feedback_count, open_page, start_stack
from tests.e2e.test_ui import LiveStack, centre_line_paths, split_in_two, sure_drawings, trace

pytestmark = pytest.mark.e2e

ROUNDS = 6
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def live(model_server, tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("game"), model_server)
    yield stack
    stop([stack.ui, stack.backend])


@pytest.fixture(scope="module")
def sure(quickdraw_test) -> dict[str, np.ndarray]:
    return sure_drawings(quickdraw_test)


def saved_counts(live: LiveStack) -> dict[str, int]:
    return {category: len(files) for category, files in list_drawings(live.settings.img_data_location).items()}


def saved_since(before: dict[str, int], live: LiveStack) -> dict[str, int]:
    """Drawings saved per category since `before` was counted."""
    after = saved_counts(live)
    return {name: count - before.get(name, 0) for name, count in after.items() if count != before.get(name, 0)}


def with_article(category: str) -> str:
    name = category.replace("_", " ")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def prompt_of(page, round_number: int) -> str:
    expect(page.locator("#game")).to_have_attribute("data-round", str(round_number))
    expect(page.locator("#game")).to_have_attribute("data-stage", "card")
    return page.get_attribute("#game", "data-prompt")


def another(sure: dict[str, np.ndarray], prompt: str) -> np.ndarray:
    """A drawing the model is sure is something else than `prompt`."""
    return next(bitmap for name, bitmap in sure.items() if name != prompt)


def draw_in_round(page, paths, draw=trace) -> None:
    """Draw the paths one stroke at a time, stopping when the round ends, as a player lifts the pen."""
    for path in paths:
        if page.get_attribute("#game", "data-stage") != "drawing":
            return
        draw(page, [path])


def round_ended(page, outcome: str) -> None:
    page.wait_for_selector("#game:not([data-stage=drawing])", timeout=30_000)
    expect(page.locator("#round-outcome")).to_have_attribute("data-outcome", outcome)


def test_six_drawn_rounds_are_recognised_and_given_when_opted_in(page, live, sure, screenshots):
    open_page(page, live)
    page.click("#mode-play")
    expect(page.locator("#correct")).to_be_hidden()  # game drawings are labelled by their prompt
    page.check("#opt-in")
    before = saved_counts(live)
    agreed = feedback_count(live, "agreed", "game")
    prompts = []
    for round_number in range(1, ROUNDS + 1):
        prompt = prompt_of(page, round_number)
        expect(page.locator("#card-prompt")).to_have_text(f"Draw {with_article(prompt)}")
        expect(page.locator("#card-time")).to_have_text("in under 20 seconds")
        page.click("#start-round")
        expect(page.locator("#bar-prompt")).to_have_text(f"Draw {with_article(prompt)}")
        draw_in_round(page, centre_line_paths(sure[prompt]))
        round_ended(page, "recognised")
        expect(page.locator("#round-outcome")).to_have_text(f"I know, it's {with_article(prompt)}!")
        if round_number == 1:
            page.screenshot(path=str(screenshots / "game.png"))
        prompts.append(prompt)
    assert len(set(prompts)) == ROUNDS  # no repeats within a game

    expect(page.locator("#game")).to_have_attribute("data-stage", "results")
    expect(page.locator("#results-title")).to_have_text("I recognised 6 of your 6 drawings")
    rows = page.locator("#result-list li")
    expect(rows).to_have_count(ROUNDS)
    assert [rows.nth(i).get_attribute("data-prompt") for i in range(ROUNDS)] == prompts
    expect(page.locator("#result-list li[data-recognised=true]")).to_have_count(ROUNDS)
    expect(page.locator("#result-list li input:checked")).to_have_count(ROUNDS)  # recognised: pre-selected
    assert all(page.locator("#result-list img").evaluate_all("(images) => images.map((i) => i.naturalWidth > 0)"))

    page.click("#give")
    expect(page.locator("#give-message")).to_have_attribute("data-state", "saved", timeout=15_000)
    total = sum(saved_counts(live).values())
    expect(page.locator("#give-message")).to_contain_text(f"Thank you for 6 drawings! {total} drawings wait")
    assert saved_since(before, live) == dict.fromkeys(prompts, 1)
    assert feedback_count(live, "agreed", "game") == agreed + ROUNDS  # saved with the prompt as the label
    expect(page.locator("#result-list li[data-given=true]")).to_have_count(ROUNDS)
    expect(page.locator("#give")).to_be_disabled()  # nothing given twice
    page.screenshot(path=str(screenshots / "game-results.png"), full_page=True)

    page.click("#back-to-drawing")
    expect(page.locator("#correct")).to_be_visible()
    expect(page.locator("#game")).to_be_hidden()


def test_without_opt_in_nothing_is_saved_and_the_choice_is_remembered(page, live, sure):
    saves = []
    page.on("request", lambda request: saves.append(request.url) if "/save-image" in request.url else None)
    open_page(page, live, "?round_seconds=10")
    before = saved_counts(live)
    page.click("#mode-play")
    expect(page.locator("#opt-in")).not_to_be_checked()

    prompt = prompt_of(page, 1)
    page.click("#start-round")
    trace(page, centre_line_paths(another(sure, prompt)))
    page.wait_for_selector("#guesses li[data-label]", timeout=10_000)
    expect(page.locator("#game")).to_have_attribute("data-stage", "drawing")  # a wrong guess: the round goes on
    round_ended(page, "timeout")
    expect(page.locator("#round-outcome")).to_have_text(f"Time's up: I didn't guess {with_article(prompt)}.")
    for round_number in range(2, ROUNDS + 1):
        prompt_of(page, round_number)
        page.click("#start-round")
        page.click("#skip")
        round_ended(page, "skipped")

    expect(page.locator("#result-list li[data-recognised=false]")).to_have_count(ROUNDS)
    expect(page.locator("#result-list li input:checked")).to_have_count(0)  # not recognised: not pre-selected
    page.check("#result-list li:first-child input")
    expect(page.locator("#opt-in")).to_be_visible()  # the results page offers the opt-in
    expect(page.locator("#give")).to_be_disabled()
    expect(page.locator("#give-message")).to_contain_text("Nothing is saved unless you tick")
    assert saves == []
    assert saved_counts(live) == before

    page.check("#opt-in")
    expect(page.locator("#give")).to_be_enabled()
    for remembered in (True, False):
        page.reload()
        page.wait_for_selector("#status[data-state=ready]", timeout=15_000)
        page.click("#mode-play")
        assert page.is_checked("#opt-in") is remembered
        page.set_checked("#opt-in", not remembered)
    assert saves == []


def focused(page) -> str:
    """The focused element's id, or for a results row's checkbox "row:<prompt>"."""
    return page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.closest('#result-list li') ? `row:${e.closest('li').dataset.prompt}` : e.id; }"
    )


def tab_to(page, target: str) -> None:
    for _ in range(30):
        if focused(page) == target:
            return
        page.keyboard.press("Tab")
    pytest.fail(f"Tab never reached {target}; focus is on {focused(page)!r}")


def test_a_game_played_with_the_keyboard_alone(page, live, sure):
    open_page(page, live, "?round_seconds=30")
    before = saved_counts(live)
    tab_to(page, "mode-play")
    page.keyboard.press("Enter")
    assert focused(page) == "start-round"
    page.keyboard.press("Tab")
    assert focused(page) == "opt-in"
    page.keyboard.press("Space")
    expect(page.locator("#opt-in")).to_be_checked()
    page.keyboard.press("Shift+Tab")

    prompts = []
    for round_number in range(1, ROUNDS + 1):
        prompts.append(prompt_of(page, round_number))
        assert focused(page) == "start-round"
        page.keyboard.press("Enter")
        expect(page.locator("#game")).to_have_attribute("data-stage", "drawing")
        assert focused(page) == "skip"
        if round_number <= 2:  # strokes need a pointer; drawing leaves the focus on Skip
            trace(page, centre_line_paths(another(sure, prompts[-1])))
            page.wait_for_selector("#guesses li[data-label]", timeout=10_000)
            assert focused(page) == "skip"
        page.keyboard.press("Space" if round_number % 2 else "Enter")
        round_ended(page, "skipped")

    expect(page.locator("#game")).to_have_attribute("data-stage", "results")
    assert focused(page) == "results-title"
    expect(page.locator("#result-list li input:disabled")).to_have_count(ROUNDS - 2)  # nothing drawn to give
    page.keyboard.press("Tab")
    assert focused(page) == f"row:{prompts[0]}"
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert focused(page) == f"row:{prompts[1]}"
    page.keyboard.press("Space")
    page.keyboard.press("Space")
    expect(page.locator("#result-list li input:checked")).to_have_count(1)
    tab_to(page, "give")
    page.keyboard.press("Enter")
    expect(page.locator("#give-message")).to_have_attribute("data-state", "saved", timeout=10_000)
    assert saved_since(before, live) == {prompts[0]: 1}

    tab_to(page, "play-again")
    page.keyboard.press("Enter")
    prompt_of(page, 1)
    assert focused(page) == "start-round"


def touch_trace(page, paths) -> None:
    """Draw the paths on the canvas with a finger, one touch each."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#canvas").bounding_box()
    cell = box["width"] / 28

    def at(point) -> list[dict]:
        return [{"x": box["x"] + (point[0] + 0.5) * cell, "y": box["y"] + (point[1] + 0.5) * cell}]

    for path in paths:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": at(path[0])})
        for point in path[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": at(point)})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_a_game_on_a_phone(browser, live, sure, screenshots):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()

    def fits() -> None:
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

    # Buttons are clicked, strokes are touches: on a loaded machine a synthetic tap's touchstart and
    # touchend can arrive far enough apart for Chromium to take it for a long press, and no click.
    try:
        open_page(page, live)
        page.click("#mode-play")
        fits()
        prompt = prompt_of(page, 1)
        page.click("#start-round")
        canvas = page.locator("#canvas").bounding_box()
        assert canvas["width"] >= 300 and canvas["x"] + canvas["width"] <= PHONE["width"]
        assert canvas["y"] + canvas["height"] <= PHONE["height"]  # the canvas is on screen while drawing
        draw_in_round(page, centre_line_paths(sure[prompt]), touch_trace)
        round_ended(page, "recognised")
        fits()
        page.screenshot(path=str(screenshots / "game-phone.png"))

        prompt = prompt_of(page, 2)
        page.click("#start-round")
        touch_trace(page, split_in_two(centre_line_paths(another(sure, prompt)))[0])
        page.wait_for_selector("#guesses li[data-label]", timeout=10_000)
        fits()
        page.click("#skip")
        for round_number in range(3, ROUNDS + 1):
            prompt_of(page, round_number)
            page.click("#start-round")
            page.click("#skip")

        expect(page.locator("#result-list li")).to_have_count(ROUNDS)
        expect(page.locator("#result-list li[data-recognised=true]")).to_have_count(1)
        fits()
        for row in page.locator("#result-list li").all():
            row.scroll_into_view_if_needed()
            expect(row).to_be_visible()
            box = row.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        page.locator("#give").scroll_into_view_if_needed()
        expect(page.locator("#give")).to_be_visible()
    finally:
        context.close()
