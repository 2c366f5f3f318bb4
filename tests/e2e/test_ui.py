"""The drawing page in real Chromium, against the real backend and MLflow model server."""

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from doodle.config import Settings, settings_under
from doodle.drawings import list_drawings
from doodle.imaging import normalize_drawing
from doodle.model.evaluate import predict_proba
from doodle.model.net import load_checkpoint
from doodle.model.registry import bundled_checkpoint
from doodle.stack.catalogue import Service, backend, ui
from doodle.stack.supervisor import stop
from tests.utils.network import free_port
from tests.utils.services import start_or_fail

pytestmark = pytest.mark.e2e

CORE = 150  # pixels this bright are a stroke's core: tracing them gives centre-line strokes
SHOWN_CATEGORIES = ["house", "fish", "star"]


@dataclass
class LiveStack:
    settings: Settings
    backend: Service
    ui: Service


@pytest.fixture(scope="module")
def live(model_server, tmp_path_factory):
    api_port, ui_port = free_port(), free_port()
    settings = settings_under(
        tmp_path_factory.mktemp("ui"),
        mlflow_hosted_model_url=model_server,
        cors_origins=[f"http://127.0.0.1:{ui_port}"],
        ui_backend_url=f"http://127.0.0.1:{api_port}",
    )
    api, drawing_ui = backend(settings, "127.0.0.1", api_port), ui(settings, "127.0.0.1", ui_port)
    start_or_fail(api, settings)
    start_or_fail(drawing_ui, settings)
    yield LiveStack(settings, api, drawing_ui)
    stop([drawing_ui, api])


def sure_drawings(quickdraw_test, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Per category (default: all the bundled model's), the first test drawing the bundled model is sure
    of (p >= 0.95), as a 28x28 bitmap."""
    net, categories, _ = load_checkpoint(bundled_checkpoint())
    picked = {}
    for name in names or categories:
        images = quickdraw_test.images[quickdraw_test.labels == quickdraw_test.categories.index(name)][:200]
        sure = predict_proba(net, images)[:, categories.index(name)] >= 0.95
        picked[name] = images[np.flatnonzero(sure)[0]].reshape(28, 28)
    return picked


@pytest.fixture(scope="module")
def clear_drawings(quickdraw_test) -> dict[str, np.ndarray]:
    return sure_drawings(quickdraw_test, SHOWN_CATEGORIES)


Point = tuple[int, int]


def centre_line_paths(bitmap: np.ndarray) -> list[list[Point]]:
    """A Quick Draw bitmap as pen paths along its core pixels, each link between neighbouring core
    pixels drawn once. Long paths instead of one stroke per link: the same ink for far fewer mouse events."""
    core = bitmap > CORE
    links: dict[Point, set[Point]] = {}
    for y, x in zip(*np.nonzero(core), strict=True):
        links.setdefault((int(x), int(y)), set())
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            ny, nx = int(y) + dy, int(x) + dx
            if 0 <= ny < 28 and 0 <= nx < 28 and core[ny, nx]:
                links[(int(x), int(y))].add((nx, ny))
                links.setdefault((nx, ny), set()).add((int(x), int(y)))
    paths = [[pixel] for pixel, linked in sorted(links.items()) if not linked]  # lone dots
    for start in sorted(links):
        while links[start]:
            path, current = [start], start
            while links[current]:
                following = min(links[current])
                links[current].discard(following)
                links[following].discard(current)
                path.append(following)
                current = following
            paths.append(path)
    return paths


def split_in_two(paths: list[list[Point]]) -> tuple[list[list[Point]], list[list[Point]]]:
    """The paths cut where half of the pen's points are drawn."""
    half = sum(len(path) for path in paths) // 2
    first, second, done = [], [], 0
    for path in paths:
        if done >= half:
            second.append(path)
        elif done + len(path) <= half:
            first.append(path)
        else:
            cut = half - done
            first.append(path[: cut + 1])
            second.append(path[cut:])
        done += len(path)
    return first, second


def trace(page, paths: list[list[Point]]) -> None:
    """Draw the paths on the canvas with the mouse, one pen stroke each."""
    box = page.locator("#canvas").bounding_box()
    cell = box["width"] / 28

    def at(point: Point) -> tuple[float, float]:
        return box["x"] + (point[0] + 0.5) * cell, box["y"] + (point[1] + 0.5) * cell

    for path in paths:
        page.mouse.move(*at(path[0]))
        page.mouse.down()
        for point in path[1:]:
            page.mouse.move(*at(point))
        page.mouse.up()


def open_ui(page, live: LiveStack) -> None:
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message) or dialog.dismiss())
    page.dialogs = dialogs
    page.goto(live.ui.url)
    page.wait_for_selector("#status[data-state=ready]", timeout=15_000)


def test_live_guess_shows_the_right_label_while_drawing(page, live, clear_drawings, screenshots):
    in_flight, most_in_flight, sent = 0, 0, 0

    def started(request):
        nonlocal in_flight, most_in_flight, sent
        if "/invocations" in request.url and request.method == "POST":
            in_flight, sent = in_flight + 1, sent + 1
            most_in_flight = max(most_in_flight, in_flight)

    def ended(request):
        nonlocal in_flight
        if "/invocations" in request.url and request.method == "POST":
            in_flight -= 1

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    open_ui(page, live)
    for name, bitmap in clear_drawings.items():
        page.click("#clear")
        first_half, second_half = split_in_two(centre_line_paths(bitmap))
        trace(page, first_half)
        page.wait_for_selector("#guesses li[data-label]", timeout=10_000)  # a guess while still drawing
        trace(page, second_half)
        page.wait_for_selector(f"#guesses li[data-label={name}]", timeout=10_000)
        bars = page.locator("#guesses li[data-label]")
        assert bars.count() == 3
        if name == "house":
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(screenshots / "drawing-ui.png"))
    assert most_in_flight == 1
    pen_moves = sum(len(path) for b in clear_drawings.values() for path in centre_line_paths(b))
    assert 0 < sent < pen_moves / 2  # debounced, not one request per pen move
    assert page.dialogs == []


def test_browser_bytes_equal_python_normalisation(page, live, clear_drawings):
    open_ui(page, live)
    drawings = [*clear_drawings.values(), None]  # None: a single tap
    for bitmap in drawings:
        page.click("#clear")
        if bitmap is None:
            box = page.locator("#canvas").bounding_box()
            page.mouse.click(box["x"] + 40, box["y"] + 60)
        else:
            trace(page, centre_line_paths(bitmap))
        raster = page.evaluate(
            "() => { const r = window.doodle.raster();"
            " return {width: r.width, height: r.height, pixels: Array.from(r.pixels)}; }"
        )
        sent = np.array(page.evaluate("() => window.doodle.bytes()"), dtype=np.uint8)
        ink = np.array(raster["pixels"], dtype=np.uint8).reshape(raster["height"], raster["width"])
        assert sent.shape == (784,)
        assert np.array_equal(sent, normalize_drawing(ink).reshape(784))


def test_correcting_a_label_saves_the_png_under_its_category(page, live, clear_drawings):
    open_ui(page, live)
    trace(page, centre_line_paths(clear_drawings["star"]))
    page.wait_for_selector("#guesses li[data-label]", timeout=10_000)
    assert page.locator("#categories option").count() >= 21
    page.fill("#category", "Shooting star")
    page.click("#save")
    page.wait_for_selector("#save-message[data-state=saved]", timeout=10_000)
    assert "shooting_star" in page.inner_text("#save-message")
    (saved,) = list_drawings(live.settings.img_data_location)["shooting_star"]
    sent = np.array(page.evaluate("() => window.doodle.bytes()"), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(saved)).reshape(784), sent)


def test_invalid_category_shows_the_backend_message_inline(page, live, clear_drawings):
    open_ui(page, live)
    trace(page, centre_line_paths(clear_drawings["fish"]))
    before = list_drawings(live.settings.img_data_location)
    page.fill("#category", "../../etc/passwd")
    page.click("#save")
    message = page.wait_for_selector("#save-message[data-state=error]", timeout=10_000)
    assert "category" in message.inner_text().lower()
    assert list_drawings(live.settings.img_data_location) == before
    assert page.dialogs == []


def test_page_fits_a_phone_screen(browser, live, screenshots):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(live.ui.url)
    page.wait_for_selector("#status[data-state=ready]", timeout=15_000)
    canvas = page.locator("#canvas").bounding_box()
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= 390
    assert canvas["width"] >= 300
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(screenshots / "drawing-ui-phone.png"), full_page=True)
    context.close()


def test_unavailable_state_shows_and_recovers_when_the_backend_returns(page, live):
    open_ui(page, live)
    stop([live.backend])
    page.wait_for_selector("#status[data-state=unavailable]", timeout=10_000)
    assert "unavailable" in page.inner_text("#status").lower()
    start_or_fail(live.backend, live.settings)
    page.wait_for_selector("#status[data-state=ready]", timeout=10_000)
