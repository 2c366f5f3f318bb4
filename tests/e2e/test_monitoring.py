"""The real Prometheus and node exporter watching the real backend, model server and pipeline viewer.

Prometheus runs the shipped prometheus.yml and alerts.yml, changed only in their target addresses.
After real traffic and a real pipeline run, every dashboard panel's query must return data and
every alert rule must evaluate.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from doodle.config import Settings, settings_env, settings_under
from doodle.pipeline import runs
from doodle.pipeline.orchestrator import run_pipeline
from doodle.pipeline.stages import STAGES
from doodle.stack.catalogue import Service, backend, dashboard, node_exporter, prometheus
from doodle.stack.prometheus_config import SHIPPED_TARGETS, write_config
from doodle.stack.supervisor import running, stop
from tests.utils.deploy import (
    Query,
    alert_queries,
    alert_rules,
    dashboard_queries,
    required_tool,
)
from tests.utils.images import b64
from tests.utils.network import free_port

pytestmark = pytest.mark.e2e

QUIET_WHILE_UP = ["BackendDown", "ModelServerDown", "PipelineViewerDown", "PipelineRunStoreUnavailable"]
MIN_NEW_IMAGES = 10
SAVED_BEFORE_RUN = 12  # labelled drawings the pipeline run takes
SAVED_AFTER_RUN = 3  # left waiting for the next run
PREDICTED = 30
WAIT_S = 90
HOST = "127.0.0.1"


def instant(prometheus: str, expr: str) -> list[dict]:
    """Run `expr` through Prometheus's HTTP API; fails the test on any query error."""
    answer = httpx.post(f"{prometheus}/api/v1/query", data={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('errorType')}: {answer.get('error')}"
    return answer["data"]["result"]


def wait_until(prometheus: str, expr: str, what: str) -> float:
    """Wait until `expr` (a filter) returns something; returns Prometheus's time of that answer."""
    deadline = time.monotonic() + WAIT_S
    while not (result := instant(prometheus, expr)):
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus never saw {what} ({expr})")
        time.sleep(1)
    return result[0]["value"][0]


def counter(base_url: str, name: str) -> float:
    """Sum of a counter's samples in the backend's own /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10, follow_redirects=True).text
    families = [family for family in text_string_to_metric_families(text) if family.name == name]
    return sum(sample.value for family in families for sample in family.samples if sample.name.endswith("_total"))


def save_drawings(http: httpx.Client, images: np.ndarray, category: str) -> None:
    for image in images:
        answer = http.post("/save-image/", json={"image": b64(image), "category": category})
        assert answer.status_code == 200, answer.text


def send_traffic(http: httpx.Client, images: np.ndarray) -> None:
    """Real predictions, one batch, and bad input of each kind."""
    for image in images[:PREDICTED]:
        answer = http.post("/invocations/", json={"inputs": b64(image)})
        assert answer.status_code == 200, answer.text
    batch = [b64(image) for image in images[PREDICTED : PREDICTED + 5]]
    assert http.post("/invocations/", json={"inputs": batch}).status_code == 200
    assert http.post("/invocations/", json={"inputs": "not base64 at all!"}).status_code == 400
    assert http.post("/invocations/", json={"inputs": b64(np.zeros(784))}).status_code == 400  # empty drawing
    assert http.post("/save-image/", json={"image": b64(images[0]), "category": "../etc"}).status_code == 400
    assert http.post("/invocations/", json={"images": []}).status_code == 422


def run_one_pipeline(settings: Settings) -> None:
    engine = runs.connect(settings.database_url)
    try:
        code = run_pipeline(settings, engine, report=lambda line: None)
        (run,) = runs.list_runs(engine)
    finally:
        engine.dispose()
    statuses = [run.status(stage) for stage in STAGES]
    assert code == 0 and statuses == ["complete"] * 7, f"{statuses} {run.message} (logs: {settings.log_dir})"


def scraping(root: Path, addresses: dict[str, str]) -> Service:
    """Prometheus on a free port with the shipped config and alerts, aimed at `addresses` (job -> host:port)."""
    config = write_config(root, addresses)
    return prometheus(required_tool("prometheus"), config, root / "tsdb", HOST, free_port())


def scraping_replicas(root: Path, targets: dict[str, list[str]]) -> Service:
    """Prometheus with the shipped config and alerts, each job of `targets` scraping the addresses listed
    (none: the job has no targets), as DNS service discovery finds every replica of a service."""
    config = write_config(root, {job: f"{HOST}:{free_port()}" for job in SHIPPED_TARGETS})
    raw = yaml.safe_load(config.read_text())
    for job in raw["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": targets[job["job_name"]]}] if targets[job["job_name"]] else []
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return prometheus(required_tool("prometheus"), config, root / "tsdb", HOST, free_port())


def active_alerts(prometheus: str) -> dict[tuple[str, str], str]:
    """(alertname, instance or "") -> state of each pending or firing alert."""
    answer = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()
    return {
        (alert["labels"]["alertname"], alert["labels"].get("instance", "")): alert["state"]
        for alert in answer["data"]["alerts"]
    }


def wait_for_alerts(prometheus: str, expected: dict[tuple[str, str], str], absent: set[str]) -> None:
    """Wait until every `expected` alert is in its state and none of the `absent` alert names is active."""
    deadline = time.monotonic() + WAIT_S
    while True:
        states = active_alerts(prometheus)
        named = {name for name, _ in states}
        if expected.items() <= states.items() and not named & absent:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"expected {expected} and none of {absent}, got {states}")
        time.sleep(1)


def panel_value(prometheus: str, source: str) -> float:
    (query,) = [query for query in dashboard_queries() if query.source == source]
    (sample,) = instant(prometheus, query.expr)
    return float(sample["value"][1])


def root_file_system_type() -> str:
    found = ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fs_type, *_ = line.split()
        if mount_point == "/":
            found = fs_type
    return found


@pytest.fixture(scope="module")
def monitored(model_server, quickdraw_test, tmp_path_factory):
    """Prometheus watching a backend, a pipeline viewer and a node exporter after real use; yields its URL."""
    node_exporter_bin = required_tool("prometheus-node-exporter", "node_exporter")
    root = tmp_path_factory.mktemp("monitoring")
    api_port, viewer_port, node_port = (free_port() for _ in range(3))
    settings = settings_under(root / "var", mlflow_hosted_model_url=model_server, min_new_images=MIN_NEW_IMAGES)
    # The pipeline's own MLflow store with the bundled model at @production; the served one stays untouched.
    done = subprocess.run(
        [sys.executable, "-m", "doodle.cli", "bootstrap"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    addresses = {
        "backend": f"{HOST}:{api_port}",
        "pipeline": f"{HOST}:{viewer_port}",
        "model-server": urlsplit(model_server).netloc,
        "node": f"{HOST}:{node_port}",
    }
    scraper = scraping(root, addresses)
    services = [
        backend(settings, HOST, api_port),
        dashboard(settings, HOST, viewer_port),
        node_exporter(node_exporter_bin, HOST, node_port),
        scraper,
    ]
    with running(services, settings.log_dir):
        wait_until(scraper.url, 'count(up{job=~"backend|pipeline|model-server|node"} == 1) == 4', "every target up")

        api = f"http://{HOST}:{api_port}"
        cats = quickdraw_test.images[quickdraw_test.labels == quickdraw_test.categories.index("cat")]
        every_class = quickdraw_test.images[:: len(quickdraw_test.images) // (PREDICTED + 5)]
        with httpx.Client(base_url=api, timeout=30) as http:
            save_drawings(http, cats[:SAVED_BEFORE_RUN], "cat")
            run_one_pipeline(settings)
            send_traffic(http, every_class)
            save_drawings(http, cats[SAVED_BEFORE_RUN : SAVED_BEFORE_RUN + SAVED_AFTER_RUN], "cat")

        requests = counter(api, "model_prediction_requests")
        errors = counter(api, "api_errors")
        wait_until(scraper.url, f"sum(model_prediction_requests_total) == {requests}", "the last predictions")
        wait_until(scraper.url, f"sum(api_errors_total) == {errors}", "the last errors")
        wait_until(scraper.url, f"doodle_pipeline_waiting_drawings == {SAVED_AFTER_RUN}", "the waiting drawings")
        seen = wait_until(scraper.url, "doodle_pipeline_last_success_timestamp_seconds > 0", "the successful run")
        # One scrape more, so that series born with the traffic have the two samples rate() needs.
        wait_until(scraper.url, f'min(timestamp(up{{job=~"backend|pipeline"}})) > {seen}', "one scrape more")
        yield scraper.url


def test_prometheus_scrapes_every_target_including_the_model_servers_ping(monitored):
    answer = httpx.get(f"{monitored}/api/v1/targets", timeout=10).json()
    health = {target["labels"]["job"]: target["health"] for target in answer["data"]["activeTargets"]}
    assert health == dict.fromkeys(SHIPPED_TARGETS, "up")


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda query: query.source)
def test_dashboard_query_returns_data(monitored, query: Query):
    if 'mountpoint="/"' in query.expr and root_file_system_type() == "overlay":
        pytest.skip("/ is a container's overlay, which the node exporter leaves out of its file systems")
    assert instant(monitored, query.expr), f"{query.source}: no data"


@pytest.mark.parametrize("query", alert_queries(), ids=lambda query: query.source)
def test_alert_expression_executes(monitored, query: Query):
    instant(monitored, query.expr)


def test_prometheus_evaluates_every_alert_rule(monitored):
    answer = httpx.get(f"{monitored}/api/v1/rules", timeout=10).json()
    loaded = {rule["name"]: rule for group in answer["data"]["groups"] for rule in group["rules"]}
    assert set(loaded) == {rule["alert"] for rule in alert_rules()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"


def test_availability_and_pipeline_alerts_are_quiet_while_all_is_well(monitored):
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    for name in [*QUIET_WHILE_UP, "PipelineRunFailed"]:
        assert instant(monitored, expressions[name]) == [], name


def test_backend_down_alert_goes_pending_when_the_backend_stops(model_server, tmp_path):
    """Its own backend and Prometheus, so that stopping the backend leaves the other tests alone."""
    settings = settings_under(tmp_path / "var", mlflow_hosted_model_url=model_server)
    api = backend(settings, HOST, free_port())
    addresses = {job: f"{HOST}:{free_port()}" for job in SHIPPED_TARGETS}  # nothing listens there
    scraper = scraping(tmp_path, {**addresses, "backend": urlsplit(api.url).netloc})
    with running([api, scraper], settings.log_dir):
        wait_until(scraper.url, 'up{job="backend"} == 1', "the backend up")
        stop([api])
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            answer = httpx.get(f"{scraper.url}/api/v1/alerts", timeout=10).json()
            states = {alert["labels"]["alertname"]: alert["state"] for alert in answer["data"]["alerts"]}
            if states.get("BackendDown") == "pending":
                return
            time.sleep(1)
    pytest.fail(f"BackendDown never went pending: {states}")


def test_replica_alerts_and_panels_follow_the_replicas_up(model_server, tmp_path):
    """As DNS service discovery finds them: two backend replicas of which one does not answer, and no model
    server or pipeline viewer at all. Then the last backend stops."""
    settings = settings_under(tmp_path / "var", mlflow_hosted_model_url=model_server)
    api = backend(settings, HOST, free_port())
    live, dead = urlsplit(api.url).netloc, f"{HOST}:{free_port()}"  # nothing listens on dead
    scraper = scraping_replicas(tmp_path, {"backend": [live, dead], "model-server": [], "pipeline": [], "node": []})
    with running([api, scraper], settings.log_dir):
        wait_for_alerts(
            scraper.url,
            {
                ("BackendReplicaDown", dead): "pending",
                ("ModelServerDown", ""): "pending",
                ("PipelineViewerDown", ""): "pending",
            },
            absent={"BackendDown", "ModelServerReplicaDown"},
        )
        assert ("BackendReplicaDown", live) not in active_alerts(scraper.url)
        assert panel_value(scraper.url, "api.json/Backend replicas up/A") == 1
        assert panel_value(scraper.url, "api.json/Model server replicas up/A") == 0
        assert panel_value(scraper.url, "api.json/Pipeline viewer/A") == 0

        stop([api])
        wait_for_alerts(scraper.url, {("BackendDown", ""): "pending"}, absent={"BackendReplicaDown"})
        assert panel_value(scraper.url, "api.json/Backend replicas up/A") == 0


def test_feedback_panel_and_alert_follow_what_people_save(model_server, quickdraw_test, tmp_path):
    """People correct 20 guesses and confirm 2: the live accuracy panel shows 2 in 22 for the served
    version and the UsersCorrectMostGuesses alert goes pending; game prompts count apart."""
    settings = settings_under(tmp_path / "var", mlflow_hosted_model_url=model_server)
    api = backend(settings, HOST, free_port())
    addresses = {job: f"{HOST}:{free_port()}" for job in SHIPPED_TARGETS}  # nothing listens there
    scraper = scraping(tmp_path, {**addresses, "backend": urlsplit(api.url).netloc})
    cats = quickdraw_test.images[quickdraw_test.labels == quickdraw_test.categories.index("cat")]
    base_url = api.url.removesuffix("/docs")
    with running([api, scraper], settings.log_dir), httpx.Client(base_url=base_url, timeout=30) as http:
        guess = http.post("/invocations/", json={"inputs": b64(cats[0])}).json()
        version = guess["model_version"]
        wait_until(scraper.url, f'doodle_feedback_total{{model_version="{version}"}} == 0', "feedback series at 0")

        saved = {"agreed": 0, "corrected": 0}
        for image in cats[:24]:
            top = http.post("/invocations/", json={"inputs": b64(image)}).json()["predictions"][0]
            outcome = "agreed" if saved["agreed"] < 2 and top == "cat" else "corrected"
            if saved[outcome] == {"agreed": 2, "corrected": 20}[outcome]:
                continue
            label = "cat" if outcome == "agreed" else ("dog" if top != "dog" else "fish")
            answer = http.post("/save-image/", json={"image": b64(image), "category": label, "source": "ui"})
            assert answer.status_code == 200, answer.text
            saved[outcome] += 1
        http.post("/save-image/", json={"image": b64(cats[0]), "category": "fish", "source": "game"})
        assert saved == {"agreed": 2, "corrected": 20}

        wait_until(scraper.url, "sum(doodle_feedback_total) == 23", "every save's feedback")
        wait_for_alerts(scraper.url, {("UsersCorrectMostGuesses", ""): "pending"}, absent=set())
        (query,) = [q for q in dashboard_queries() if q.source == "model.json/Live accuracy from user feedback/A"]
        shown = {
            (s["metric"]["model_version"], s["metric"]["source"]): float(s["value"][1])
            for s in instant(scraper.url, query.expr)
        }
        assert shown[(version, "ui")] == pytest.approx(2 / 22)
        assert shown[(version, "game")] == 0
