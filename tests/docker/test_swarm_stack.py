"""deploy/swarm/doodle-stack.yml on a single-node swarm: deploy, scale, predict and save, retrain, roll, remove.

The engine joins a swarm only if it is in none, with its published ports on 127.0.0.1 (see
tests/utils/swarm.py), and leaves it at the end. The tests share one stack and run in file order; the
last one removes it. Grafana is left out: the test machines cannot pull its image.
"""

import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
import yaml

from tests.utils.docker import COMPOSE_FILE, REPO, docker, wait_for
from tests.utils.images import b64, png_b64
from tests.utils.network import free_port
from tests.utils.swarm import STACK_FILE, SwarmStack, single_node_swarm

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

NEW_CLASS = "umbrella"  # not among the bundled model's classes
NEW_DRAWINGS = REPO.parent / "shared" / "quickdraw-new" / f"{NEW_CLASS}.npy"
MIN_NEW_IMAGES = 400
BACKENDS, MODEL_SERVERS = 3, 2
MODEL = "doodle-classifier"
PRODUCTION = "production"


@pytest.fixture(scope="module")
def stack(doodle_image, tmp_path_factory):
    if not NEW_DRAWINGS.is_file():
        pytest.fail(f"Quick Draw's new categories not found at {NEW_DRAWINGS}: clone the project beside shared/")
    with single_node_swarm() as joined:
        swarm = "joined for this test" if joined else "the engine's own"
        print(f"swarm: {swarm}; Grafana left out: its image cannot be pulled on the test machines")  # noqa: T201
        stack = SwarmStack(
            env={
                "MIN_NEW_IMAGES": str(MIN_NEW_IMAGES),
                "PIPELINE_WATCH_INTERVAL_S": "3",
                "NODE_EXPORTER_ADDRESS": "127.0.0.1",
                "NODE_EXPORTER_PORT": str(free_port()),
            },
            left_out=("grafana",),
        )
        try:
            rendered = stack.render(tmp_path_factory.mktemp("swarm"))
            started = time.monotonic()
            stack.deploy(rendered)
            deployed = time.monotonic()
            stack.wait_converged(timeout_s=240)
            converged = time.monotonic()
            # The load balancer finds a task through DNS and checks it every 2 s: it may route to one a
            # moment after Docker calls it healthy. The backend's /health asks a model server through it.
            wait_for(
                "the load balancer routing to a backend and a model server",
                lambda: httpx.get(stack.url("API_PORT", "/health"), timeout=5).status_code == 200,
                30,
                interval_s=0.5,
            )
            print(  # noqa: T201
                f"stack {stack.name}: deployed in {deployed - started:.2f} s, "
                f"converged and healthy in {converged - started:.0f} s, "
                f"routed by the load balancer {time.monotonic() - converged:.1f} s later"
            )
            yield stack
        finally:
            if any(stack.leftovers().values()):
                stack.remove()


def predict(client: httpx.Client, url: str, bitmap: np.ndarray) -> dict:
    answer = client.post(url, json={"inputs": b64(bitmap)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def new_drawings(count: int) -> np.ndarray:
    return np.load(NEW_DRAWINGS)[:count].reshape(-1, 28, 28)


def backend_requests(stack: SwarmStack) -> dict[str, float]:
    """model_prediction_requests_total of every backend task, by container id."""
    counts = {}
    for container in stack.containers("fastapi-backend"):
        text = httpx.get(f"http://{stack.address(container)}:8000/metrics", timeout=5).text
        (line,) = [line for line in text.splitlines() if line.startswith("model_prediction_requests_total ")]
        counts[container["Id"]] = float(line.split()[1])
    return counts


def served_versions(stack: SwarmStack) -> list[str]:
    """The registry version each model-server task serves, asked at the task's own address."""
    return [
        httpx.get(f"http://{stack.address(container)}:5002/model-version", timeout=5).json()["version"]
        for container in stack.containers("model-server")
    ]


def production_version(stack: SwarmStack) -> dict:
    """The registry's model version at the production alias, with its tags (the gate's verdict)."""
    alias = httpx.get(
        stack.url("MLFLOW_PORT", "/api/2.0/mlflow/registered-models/alias"),
        params={"name": MODEL, "alias": PRODUCTION},
        timeout=10,
    )
    assert alias.status_code == 200, alias.text
    version = alias.json()["model_version"]
    return {"version": version["version"], **{tag["key"]: tag["value"] for tag in version.get("tags", [])}}


def test_swarm_stack_file_has_the_compose_services_with_swarm_keys():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    services = yaml.safe_load(STACK_FILE.read_text())["services"]
    assert set(services) == set(compose)
    published = {}
    for name, service in services.items():
        assert not {"build", "restart", "depends_on"} & set(service), f"{name} has a key Swarm ignores"
        assert service["image"] == compose[name]["image"]
        if service["networks"] != ["host-network"]:
            assert service["deploy"]["endpoint_mode"] == "dnsrr", f"{name} would need the routing mesh"
        for port in service.get("ports", []):
            assert port["mode"] == "host", f"{name} publishes through the routing mesh"
            published[port["target"]] = name
    assert published[8000] == published[5002] == "load-balancer"
    for name in ("fastapi-backend", "model-server"):
        assert name not in published.values()
        assert services[name]["deploy"]["update_config"]["order"] == "start-first"
    assert services["bootstrap"]["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_swarm_stack_publishes_on_loopback_and_runs_the_node_exporter_on_the_host(stack):
    for short_name in ("load-balancer", "ui", "pipeline-viewer", "mlflow", "prometheus"):
        (container,) = stack.containers(short_name)
        bindings = [binding for found in container["NetworkSettings"]["Ports"].values() for binding in found or []]
        assert bindings and {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}, (short_name, bindings)
    assert httpx.get(stack.url("UI_PORT", "/health"), timeout=5).status_code == 200
    exporter = httpx.get(f"http://127.0.0.1:{stack.env['NODE_EXPORTER_PORT']}/metrics", timeout=10)
    assert "node_cpu_seconds_total" in exporter.text  # it listens on the host's own loopback


def test_swarm_stack_predicts_and_saves_through_the_load_balancer(stack, quickdraw_dir):
    drawing = np.load(quickdraw_dir / "cat.npy")[0].reshape(28, 28)
    with httpx.Client(timeout=10) as client:
        answer = predict(client, stack.url("API_PORT", "/invocations/"), drawing)
        assert answer["predictions"][0] == "cat"
        saved = client.post(stack.url("API_PORT", "/save-image/"), json={"image": png_b64(drawing), "category": "cat"})
        assert saved.status_code == 200, saved.text
        assert saved.json()["category"] == "cat"
        # MLflow's protocol on the load balancer's model-server port
        scored = client.post(stack.url("MODEL_SERVER_PORT", "/invocations"), json={"inputs": [b64(drawing)]})
        assert scored.status_code == 200, scored.text
        assert scored.json()["predictions"][0]["labels"][0] == "cat"


def test_swarm_stack_scaled_copies_all_serve(stack):
    started = time.monotonic()
    docker(
        "service", "scale", "--detach=true",
        f"{stack.service('fastapi-backend')}={BACKENDS}",
        f"{stack.service('model-server')}={MODEL_SERVERS}",
    )  # fmt: skip
    stack.wait_converged(timeout_s=150)
    print(f"scaled to {BACKENDS} backends and {MODEL_SERVERS} model servers in {time.monotonic() - started:.0f} s")  # noqa: T201

    before = backend_requests(stack)
    assert len(before) == BACKENDS
    drawing = new_drawings(1)[0]
    with httpx.Client(timeout=10) as client:

        def every_backend_answered() -> bool:
            for _ in range(3 * BACKENDS):
                predict(client, stack.url("API_PORT", "/invocations/"), drawing)
            now = backend_requests(stack)
            return all(now[container] > count for container, count in before.items())

        wait_for("every backend task answering requests sent to the load balancer", every_backend_answered, 30)

    model_servers = stack.containers("model-server")
    assert len(model_servers) == MODEL_SERVERS
    for container in model_servers:
        scored = httpx.post(f"http://{stack.address(container)}:5002/invocations", json={"inputs": [b64(drawing)]})
        assert scored.status_code == 200, scored.text

    def prometheus_scrapes_every_backend() -> bool:
        targets = httpx.get(stack.url("PROMETHEUS_PORT", "/api/v1/targets"), timeout=5).json()["data"]
        backends = [target for target in targets["activeTargets"] if target["labels"]["job"] == "backend"]
        return len(backends) == BACKENDS and all(target["health"] == "up" for target in backends)

    wait_for("Prometheus scraping every backend task", prometheus_scrapes_every_backend, 60, interval_s=2)


def test_swarm_stack_pipeline_retrains_and_every_model_server_swaps(stack):
    before = production_version(stack)["version"]
    assert set(served_versions(stack)) == {before}
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        for drawing in new_drawings(MIN_NEW_IMAGES):
            saved = client.post(
                stack.url("API_PORT", "/save-image/"), json={"image": png_b64(drawing), "category": NEW_CLASS}
            )
            assert saved.status_code == 200, saved.text
        saved_s = time.monotonic() - started

        def finished_run() -> dict | None:
            runs = client.get(stack.url("VIEWER_PORT", "/pipeline_runs")).json()
            if any(run[f"stage_{stage}_status"] == "failed" for run in runs for stage in range(1, 8)):
                pytest.fail(f"a pipeline run failed: {runs[0]}")
            return next((run for run in runs if run["stage_7_status"] == "complete"), None)

        run = wait_for("the watcher's pipeline run complete", finished_run, 240, interval_s=2)
    pipeline_s = time.monotonic() - started

    production = production_version(stack)
    after = production["version"]
    assert after != before, f"the gate kept version {before}: {run['message']}"
    wait_for(f"every model-server task serving version {after}", lambda: set(served_versions(stack)) == {after}, 30)
    categories = httpx.get(stack.url("API_PORT", "/categories"), timeout=10).json()
    assert NEW_CLASS in categories["categories"] and categories["model_version"] == after
    print(  # noqa: T201
        f"pipeline: {MIN_NEW_IMAGES} {NEW_CLASS} drawings saved in {saved_s:.1f} s, run {run['run_id']} complete "
        f"{pipeline_s:.0f} s and every model server on version {after} (was {before}) "
        f"{time.monotonic() - started:.0f} s after the first save; gate: {production['gate']}"
    )


def test_swarm_stack_rolling_update_of_the_backend_fails_no_request(stack):
    old_tasks = {container["Id"] for container in stack.containers("fastapi-backend")}
    payloads = [b64(drawing) for drawing in new_drawings(20)]
    stop = threading.Event()
    sent, failures = 0, Counter()

    def send_predictions() -> None:
        nonlocal sent
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                sent += 1
                try:
                    answer = client.post(stack.url("API_PORT", "/invocations/"), json={"inputs": payloads[sent % 20]})
                    if answer.status_code != 200:
                        failures[str(answer.status_code)] += 1
                except httpx.HTTPError as error:
                    failures[type(error).__name__] += 1

    def tasks_once_old_ones_stopped() -> set[str] | None:
        tasks = {container["Id"] for container in stack.containers("fastapi-backend")}
        return None if tasks & old_tasks else tasks

    load = threading.Thread(target=send_predictions, name="load")
    load.start()
    since, started = time.time(), time.monotonic()
    try:
        docker("service", "update", "--force", "--detach=false", stack.service("fastapi-backend"), timeout=300)
        # The update ends when the last new task is healthy; the old one it replaced still drains.
        new_tasks = wait_for("the last old backend task stopped", tasks_once_old_ones_stopped, 30, interval_s=0.5)
        update_s = time.monotonic() - started
    finally:
        stop.set()
        load.join()
    # The load balancer logs only the requests it retried, redispatched or failed.
    logged = docker("service", "logs", "--raw", "--since", f"{since - 1:.0f}", stack.service("load-balancer")).stdout
    moved = [line for line in logged.splitlines() if '"POST /invocations/' in line]
    print(  # noqa: T201
        f"rolling update of {BACKENDS} backends in {update_s:.0f} s: {sent} requests sent, "
        f"{len(moved)} moved to another backend by the load balancer, {sum(failures.values())} failed {dict(failures)}"
    )
    assert len(new_tasks) == BACKENDS
    assert sent > 100
    assert not failures, "the load balancer's log of retried or failed requests:\n" + "\n".join(moved[-20:])


def test_swarm_stack_rm_leaves_nothing_behind(stack):
    started = time.monotonic()
    stack.remove()
    print(f"stack removed, volumes too, in {time.monotonic() - started:.0f} s")  # noqa: T201
    assert stack.leftovers() == {kind: [] for kind in ("services", "containers", "networks", "volumes", "configs")}
