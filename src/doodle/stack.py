"""Run the local stack: each service a child process, one Ctrl-C stops them all."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from doodle.config import Settings, settings_env

logger = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
PROMETHEUS_DIR = Path(__file__).parent / "monitoring" / "prometheus"  # package data
SHIPPED_TARGETS = {  # prometheus.yml's targets, as docker-compose.yml names them
    "backend": "fastapi-backend:8000",
    "pipeline": "pipeline-viewer:8001",
    "model-server": "model-server:5002",
    "node": "host.docker.internal:9100",
}


@dataclass
class Service:
    name: str
    command: list[str]
    url: str
    health_url: str | None  # None: healthy while the process runs
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None


def venv_path() -> str:
    """PATH with this interpreter's bin folder first: `mlflow models serve` execs `uvicorn`."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def registry_env(settings: Settings) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MODEL_NAME": settings.model_name,
        "MODEL_ALIAS": settings.model_alias,
        "PATH": venv_path(),
    }


def model_server(settings: Settings, host: str, port: int, poll_s: float = 2.0) -> Service:
    """The model server that follows the deployment alias (see doodle.serving)."""
    return Service(
        "model server",
        python_module("doodle.cli", "serve-model", "--host", host, "--port", str(port), "--poll", str(poll_s)),
        f"http://{host}:{port}/invocations",
        f"http://{host}:{port}/ping",
        env=registry_env(settings),
    )


def stock_model_server(settings: Settings, host: str, port: int) -> Service:
    """Stock `mlflow models serve` of name@alias: the design's server, and the benchmark baseline."""
    uri = f"models:/{settings.model_name}@{settings.model_alias}"
    return Service(
        "stock model server",
        python_module("mlflow", "models", "serve", "-m", uri, "-h", host, "-p", str(port), "--env-manager", "local"),
        f"http://{host}:{port}/invocations",
        f"http://{host}:{port}/ping",
        env=registry_env(settings),
    )


def mlflow_server(settings: Settings, host: str, port: int) -> Service:
    artifacts = Path(settings.mlflow_artifacts_dir).resolve().as_uri()
    return Service(
        "mlflow",
        python_module(
            "mlflow", "server", "--backend-store-uri", settings.mlflow_tracking_uri,
            "--default-artifact-root", artifacts, "--host", host, "--port", str(port), "--workers", "1",
        ),
        f"http://{host}:{port}",
        f"http://{host}:{port}/health",
    )  # fmt: skip


def web_app(name: str, factory: str, host: str, port: int, url_path: str = "", access_log: bool = True) -> Service:
    """A uvicorn app factory as a service with a /health check."""
    url = f"http://{host}:{port}"
    command = python_module("uvicorn", factory, "--factory", "--host", host, "--port", str(port))
    if not access_log:
        command.append("--no-access-log")
    return Service(name, command, url + url_path, f"{url}/health")


def backend(host: str, port: int) -> Service:
    """No access log: a line per prediction cost 10% of the backend's CPU; /metrics counts requests."""
    return web_app("backend", "doodle.api.app:create_app_from_env", host, port, "/docs", access_log=False)


def ui(host: str, port: int) -> Service:
    return web_app("ui", "doodle.ui.server:create_ui_app_from_env", host, port)


def dashboard(host: str, port: int) -> Service:
    """The pipeline viewer."""
    return web_app("pipeline viewer", "doodle.dashboard.app:create_dashboard_app_from_env", host, port)


def pipeline_watcher(interval_s: float) -> Service:
    return Service(
        "pipeline watcher",
        python_module("doodle.cli", "pipeline", "watch", "--interval", str(interval_s)),
        f"every {interval_s:g}s",
        None,
    )


def prometheus_config(directory: Path, addresses: dict[str, str]) -> Path:
    """The shipped prometheus.yml with only its target addresses replaced, beside alerts.yml."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    for job, shipped in SHIPPED_TARGETS.items():
        if text.count(f'"{shipped}"') != 1:
            raise ValueError(f"{shipped} is not the {job} target of prometheus.yml")
        text = text.replace(f'"{shipped}"', f'"{addresses[job]}"')
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(text)
    (directory / "alerts.yml").write_text((PROMETHEUS_DIR / "alerts.yml").read_text())
    return directory / "prometheus.yml"


def prometheus(binary: str, config: Path, data_dir: Path, host: str, port: int) -> Service:
    url = f"http://{host}:{port}"
    command = [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}"]
    command.append(f"--web.listen-address={host}:{port}")
    return Service("prometheus", command, url, f"{url}/-/ready")


def node_exporter(binary: str, host: str, port: int) -> Service:
    url = f"http://{host}:{port}/metrics"
    return Service("node exporter", [binary, f"--web.listen-address={host}:{port}"], url, url)


@dataclass
class Ports:
    mlflow: int = 5000
    model: int = 5002
    api: int = 8000
    ui: int = 9080
    dashboard: int = 8001
    prometheus: int = 9090
    node_exporter: int = 9100


def monitoring(settings: Settings, host: str, ports: Ports) -> list[Service]:
    """Prometheus and the node exporter, each only when it is installed."""
    services = []
    node_binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if node_binary:
        services.append(node_exporter(node_binary, host, ports.node_exporter))
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary and PROMETHEUS_DIR.is_dir():
        targets = {"backend": ports.api, "pipeline": ports.dashboard, "model-server": ports.model}
        targets["node"] = ports.node_exporter
        folder = Path(settings.var_dir) / "prometheus"
        config = prometheus_config(folder, {job: f"{host}:{port}" for job, port in targets.items()})
        services.append(prometheus(prometheus_binary, config, folder / "data", host, ports.prometheus))
    if len(services) < 2:
        logger.info("prometheus or prometheus-node-exporter is not installed: see the README to add them")
    return services


def local_stack(settings: Settings, host: str, ports: Ports, watch_interval_s: float) -> list[Service]:
    """Every service of `doodle run`, each told where the others listen."""
    ui_origins = [f"http://{name}:{ports.ui}" for name in (host, "localhost", "127.0.0.1")]
    wired = settings.model_copy(
        update={
            "mlflow_hosted_model_url": f"http://{host}:{ports.model}/invocations/",
            "ui_backend_url": f"http://{host}:{ports.api}",
            "cors_origins": sorted(set(settings.cors_origins) | set(ui_origins)),
        }
    )
    services = [
        mlflow_server(wired, host, ports.mlflow),
        model_server(wired, host, ports.model),
        backend(host, ports.api),
        ui(host, ports.ui),
        dashboard(host, ports.dashboard),
        pipeline_watcher(watch_interval_s),
        *monitoring(wired, host, ports),
    ]
    env = settings_env(wired)
    for service in services:
        service.env = {**env, **service.env}
    return services


def start(service: Service, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{service.name.replace(' ', '_')}.log", "ab")
    service.process = subprocess.Popen(
        service.command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **service.env},
        start_new_session=True,  # its own process group, so stopping it stops its workers too
    )
    log.close()
    logger.info("service started name=%s pid=%d", service.name, service.process.pid)


def is_healthy(service: Service) -> bool:
    if service.health_url is None:
        return service.process is not None and service.process.poll() is None
    try:
        return httpx.get(service.health_url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(services: list[Service], timeout_s: float) -> list[Service]:
    """Wait until every service answers its health check; returns those that never did."""
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if s.process.poll() is None and not is_healthy(s)]
        if any(s.process.poll() is not None for s in pending):
            break
        if pending:
            time.sleep(0.5)
    return pending


def stop(services: list[Service]) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after a grace period."""
    running = [s for s in services if s.process is not None and s.process.poll() is None]
    for service in running:
        _signal_group(service.process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for service in running:
        try:
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("service did not stop, killing name=%s", service.name)
            _signal_group(service.process, signal.SIGKILL)
            service.process.wait()
        _signal_group(service.process, signal.SIGKILL)  # stray workers of the group
        logger.info("service stopped name=%s", service.name)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def print_table(services: list[Service]) -> None:
    width = max(len(s.name) for s in services)
    for service in services:
        state = "healthy" if is_healthy(service) else "NOT HEALTHY"
        print(f"  {service.name:<{width}}  {service.url:<40}  {state}")  # noqa: T201


def run(services: list[Service], log_dir: Path, health_timeout_s: float = 120.0) -> int:
    """Start all services and supervise them until Ctrl-C or one of them exits."""
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for service in services:
            start(service, log_dir)
        failed = wait_healthy(services, health_timeout_s)
        print_table(services)
        if failed:
            logger.error("services not healthy: %s (see %s)", ", ".join(s.name for s in failed), log_dir)
            return 1
        print("All services are up. Press Ctrl-C to stop.")  # noqa: T201
        while not stopping:
            exited = [s for s in services if s.process.poll() is not None]
            if exited:
                logger.error("service exited name=%s code=%s", exited[0].name, exited[0].process.returncode)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        stop(services)
