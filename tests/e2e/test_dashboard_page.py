"""The pipeline viewer page in a real browser: a real viewer process reading the real PostgreSQL."""

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.engine import make_url

from doodle.config import Settings, settings_under
from doodle.pipeline import runs
from doodle.pipeline.stages import STAGES, Status, stage_number
from doodle.stack.catalogue import dashboard
from doodle.stack.supervisor import stop
from tests.utils.db import POSTGRES_URL
from tests.utils.network import free_port
from tests.utils.services import start_or_fail

pytestmark = pytest.mark.e2e

POLL_WAIT_MS = 6000  # the page polls every 5 s


@contextmanager
def running_viewer(settings: Settings, ready_path: str = "/health") -> Iterator[str]:
    """The viewer as deployed (`doodle dashboard`, own process group); yields the page URL."""
    service = dashboard(settings, "127.0.0.1", free_port())
    service.health_url = f"{service.url}{ready_path}"
    start_or_fail(service, settings, timeout_s=90)
    try:
        yield f"{service.url}/"
    finally:
        stop([service])


def stage_cell(run_id: int, stage: str, status: str) -> str:
    return f'tr[data-run-id="{run_id}"] td[data-stage="{stage}"][data-status="{status}"]'


def complete(engine: Engine, run_id: int, stages) -> None:
    for stage in stages:
        runs.update_stage(engine, run_id, stage, Status.RUNNING)
        runs.update_stage(engine, run_id, stage, Status.COMPLETE)


def backdate(engine: Engine, run_id: int, start: datetime, seconds: dict[str, float | None]) -> None:
    """Give a run realistic times: stages back to back from `start`, None for one still running."""
    values: dict = {"start_time": start}
    at = start + timedelta(seconds=1.5)
    for stage, took in seconds.items():
        n = stage_number(stage)
        values[f"stage_{n}_start"] = at
        if took is not None:
            at += timedelta(seconds=took)
            values[f"stage_{n}_end"] = at
    with engine.begin() as connection:
        connection.execute(update(runs.pipeline_runs).where(runs.pipeline_runs.c.run_id == run_id).values(**values))


def seed_history(engine: Engine) -> dict[str, int]:
    """Four runs as a real week looks: a success, a skip, a failure and one in progress."""
    now = datetime.now(UTC)
    took = {"scan": 0.4, "merge": 1.3, "convert": 4.8, "version": 7.2, "retrain": 151.6, "register": 3.1, "clean": 0.6}
    ids = {name: runs.create_run(engine) for name in ("success", "skipped", "failed", "running")}

    complete(engine, ids["success"], STAGES)
    backdate(engine, ids["success"], now - timedelta(days=2, hours=3), took)

    complete(engine, ids["skipped"], ["scan"])
    runs.set_not_triggered(engine, ids["skipped"])
    runs.update_stage(engine, ids["skipped"], "scan", Status.COMPLETE, "4 new drawings, fewer than MIN_NEW_IMAGES=10")
    backdate(engine, ids["skipped"], now - timedelta(days=1, hours=5), {"scan": 0.3})

    complete(engine, ids["failed"], STAGES[:4])
    runs.update_stage(engine, ids["failed"], "retrain", Status.RUNNING)
    runs.update_stage(engine, ids["failed"], "retrain", Status.FAILED)
    runs.mark_from(engine, ids["failed"], "retrain", Status.FAILED, "retrain: replay data missing for 3 old classes")
    backdate(engine, ids["failed"], now - timedelta(hours=6), {**{s: took[s] for s in STAGES[:4]}, "retrain": 12.3})

    complete(engine, ids["running"], STAGES[:4])
    runs.update_stage(engine, ids["running"], "retrain", Status.RUNNING)
    backdate(
        engine, ids["running"], now - timedelta(seconds=110), {**{s: took[s] for s in STAGES[:4]}, "retrain": None}
    )
    return ids


def test_viewer_page_follows_the_run_store_without_reload(page, postgresql_url, tmp_path):
    engine = runs.connect(postgresql_url)
    with running_viewer(settings_under(tmp_path, database_url=postgresql_url)) as url:
        page.goto(url)
        page.wait_for_selector("#empty:not([hidden])", timeout=POLL_WAIT_MS)
        assert page.inner_text("#empty") == "No pipeline runs yet"
        assert page.inner_text("#updated").startswith("updated ")
        page.evaluate("window.__loaded = true")  # gone if the page reloads

        runs.init_db(engine)
        run_id = runs.create_run(engine)
        page.wait_for_selector(stage_cell(run_id, "scan", "waiting"), timeout=POLL_WAIT_MS)
        assert page.is_hidden("#empty")

        complete(engine, run_id, STAGES[:4])
        runs.update_stage(engine, run_id, "retrain", Status.RUNNING)
        running = page.wait_for_selector(stage_cell(run_id, "retrain", "running"), timeout=POLL_WAIT_MS)
        assert re.fullmatch(r"retrain: running for \d+ s", running.get_attribute("title"))
        assert page.locator(stage_cell(run_id, "version", "complete")).count() == 1

        runs.update_stage(engine, run_id, "retrain", Status.COMPLETE)
        done = page.wait_for_selector(stage_cell(run_id, "retrain", "complete"), timeout=POLL_WAIT_MS)
        done.hover()
        assert re.fullmatch(r"retrain: \d+\.\d s", done.get_attribute("title"))
        assert "complete" in done.inner_text()
        assert page.evaluate("window.__loaded") is True
    engine.dispose()


def test_viewer_page_shows_every_status_and_message(page, postgresql_url, tmp_path, screenshots):
    engine = runs.connect(postgresql_url)
    runs.init_db(engine)
    ids = seed_history(engine)
    with running_viewer(settings_under(tmp_path, database_url=postgresql_url)) as url:
        page.goto(url)
        page.wait_for_selector(stage_cell(ids["running"], "retrain", "running"), timeout=POLL_WAIT_MS)

        order = page.eval_on_selector_all("tr[data-run-id]", "rows => rows.map(r => Number(r.dataset.runId))")
        assert order == sorted(ids.values(), reverse=True)
        assert page.locator(stage_cell(ids["success"], "clean", "complete")).count() == 1
        assert page.locator(f'tr[data-run-id="{ids["skipped"]}"] td[data-status="not_triggered"]').count() == 6
        assert page.locator(f'tr[data-run-id="{ids["failed"]}"] td[data-status="failed"]').count() == 3
        assert page.locator(f'tr[data-run-id="{ids["running"]}"] td[data-status="waiting"]').count() == 2

        titles = {
            "success": page.get_attribute(stage_cell(ids["success"], "retrain", "complete"), "title"),
            "failed": page.get_attribute(stage_cell(ids["failed"], "retrain", "failed"), "title"),
            "running": page.get_attribute(stage_cell(ids["running"], "retrain", "running"), "title"),
            "scan": page.get_attribute(stage_cell(ids["success"], "scan", "complete"), "title"),
        }
        assert titles["success"] == "retrain: 2 min 31 s"
        assert titles["failed"] == "retrain: failed after 12.3 s"
        assert re.fullmatch(r"retrain: running for 1 min \d+ s", titles["running"])
        assert titles["scan"] == "scan: 0.4 s"

        message = page.locator(f'tbody:has(tr[data-run-id="{ids["failed"]}"]) tr.message')
        assert message.is_visible() and message.inner_text() == "retrain: replay data missing for 3 old classes"
        assert page.get_attribute(f'tr[data-run-id="{ids["failed"]}"]', "title") == message.inner_text()

        colours = page.eval_on_selector_all(
            "td[data-status]",
            """cells => [...new Set(cells.map(c => {
                const style = getComputedStyle(c);
                return `${c.dataset.status}|${style.backgroundColor}|${style.backgroundImage}`;
            }))]""",
        )
        assert len({colour.split("|", 1)[1] for colour in colours}) == len(Status)

        page.screenshot(path=screenshots / "pipeline-viewer.png", full_page=True, animations="disabled")

        page.set_viewport_size({"width": 400, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # the table scrolls instead
    engine.dispose()


def test_viewer_page_shows_store_errors_until_the_store_answers(page, postgresql_url, tmp_path):
    database = f"doodle_viewer_{uuid.uuid4().hex[:8]}"  # does not exist yet: every read fails
    database_url = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    admin = runs.connect(POSTGRES_URL)
    try:
        with running_viewer(settings_under(tmp_path, database_url=database_url), ready_path="/") as url:
            page.goto(url)
            banner = page.wait_for_selector("#error:not([hidden])", timeout=POLL_WAIT_MS)
            assert banner.inner_text().startswith("Run store unavailable: ")
            assert "Traceback" not in banner.inner_text()
            page.evaluate("window.__loaded = true")

            with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{database}"'))
            page.wait_for_selector("#error", state="hidden", timeout=POLL_WAIT_MS)
            assert page.is_visible("text=No pipeline runs yet")
            assert page.evaluate("window.__loaded") is True
    finally:
        with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """`folder` served over HTTP on its own port: a page from another origin than the viewer."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_from_another_origin_reads_the_runs(page, tmp_path):
    """The original design's pipeline page is served elsewhere and fetches /pipeline_runs cross-origin."""
    settings = settings_under(tmp_path)
    engine = runs.connect(settings.database_url)
    runs.init_db(engine)
    run_id = runs.create_run(engine)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        "<pre id=out></pre><script>"
        "fetch(new URLSearchParams(location.search).get('viewer') + '/pipeline_runs')"
        ".then(r => r.json()).then(rows => out.textContent = 'runs ' + rows.map(r => r.run_id).join(','))"
        ".catch(e => out.textContent = 'blocked ' + e);</script>"
    )
    with running_viewer(settings) as viewer_url, static_site(site) as site_url:
        page.goto(f"{site_url}/index.html?viewer={viewer_url.rstrip('/')}")
        page.wait_for_function("document.getElementById('out').textContent !== ''")
        assert page.inner_text("#out") == f"runs {run_id}"
    engine.dispose()
