"""Every service of the local stack: its command, where it listens and how its health is checked.

The doodle services run as `doodle <command>`, the same commands docker-compose.yml runs.
"""

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from doodle.config import Settings, settings_env
from doodle.stack.prometheus_config import write_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Ports:
    """Where each service listens; the port flags of `doodle run`, `api`, `ui`, `dashboard` and
    `serve-model` default to these."""

    mlflow: int = 5000
    model: int = 5002
    api: int = 8000
    ui: int = 9080
    dashboard: int = 8001
    prometheus: int = 9090
    node_exporter: int = 9100


@dataclass
class Service:
    name: str
    command: list[str]
    url: str  # what the user opens
    health_url: str | None  # None: healthy while the process runs
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None  # set by the supervisor while it runs
    log_file: Path | None = None  # set by the supervisor: the process's stdout and stderr


def doodle_command(*args: str) -> list[str]:
    """`doodle <args>` through this interpreter, so the venv's bin folder need not be on PATH."""
    return [sys.executable, "-m", "doodle.cli", *args]


def _listening(host: str, port: int) -> list[str]:
    return ["--host", host, "--port", str(port)]


def mlflow_server(settings: Settings, host: str, port: int) -> Service:
    """Tracking server and model registry; its UI is where runs and versions are browsed."""
    artifacts = Path(settings.mlflow_artifacts_dir).resolve().as_uri()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.mlflow_tracking_uri]
    command += ["--default-artifact-root", artifacts, *_listening(host, port), "--workers", "1"]
    return Service("mlflow", command, f"http://{host}:{port}", f"http://{host}:{port}/health")


def model_server(settings: Settings, host: str, port: int, poll_s: float = 2.0) -> Service:
    """Serves name@alias and follows the alias when it moves (see doodle.serving)."""
    command = doodle_command("serve-model", *_listening(host, port), "--poll", str(poll_s))
    url = f"http://{host}:{port}"
    return Service("model-server", command, f"{url}/invocations", f"{url}/ping", env=settings_env(settings))


def backend(settings: Settings, host: str, port: int) -> Service:
    url = f"http://{host}:{port}"
    command = doodle_command("api", *_listening(host, port))
    return Service("backend", command, f"{url}/docs", f"{url}/health", env=settings_env(settings))


def ui(settings: Settings, host: str, port: int) -> Service:
    """The drawing page."""
    url = f"http://{host}:{port}"
    command = doodle_command("ui", *_listening(host, port))
    return Service("ui", command, url, f"{url}/health", env=settings_env(settings))


def dashboard(settings: Settings, host: str, port: int) -> Service:
    """The pipeline viewer."""
    url = f"http://{host}:{port}"
    command = doodle_command("dashboard", *_listening(host, port))
    return Service("pipeline-viewer", command, url, f"{url}/health", env=settings_env(settings))


def pipeline_watcher(settings: Settings, interval_s: float) -> Service:
    command = doodle_command("pipeline", "watch", "--interval", str(interval_s))
    return Service("pipeline-watcher", command, f"every {interval_s:g}s", None, env=settings_env(settings))


def prometheus(binary: str, config: Path, data_dir: Path, host: str, port: int) -> Service:
    url = f"http://{host}:{port}"
    command = [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}"]
    command.append(f"--web.listen-address={host}:{port}")
    return Service("prometheus", command, url, f"{url}/-/ready")


def node_exporter(binary: str, host: str, port: int) -> Service:
    url = f"http://{host}:{port}/metrics"
    return Service("node-exporter", [binary, f"--web.listen-address={host}:{port}"], url, url)


def installed(service: str, binaries: tuple[str, ...], debian_package: str) -> str | None:
    """Path of the first of `binaries` on PATH; when none is there, says which package provides it."""
    for binary in binaries:
        if found := shutil.which(binary):
            return found
    logger.warning(
        "service skipped name=%s missing_binary=%s debian_package=%s", service, " or ".join(binaries), debian_package
    )
    return None


def monitoring(settings: Settings, host: str, ports: Ports) -> list[Service]:
    """Prometheus, with the shipped config and alerts aimed at this stack, and the node exporter: each
    only when it is installed."""
    services = []
    node_binaries = ("prometheus-node-exporter", "node_exporter")  # Debian's name, then upstream's
    if node_binary := installed("node-exporter", node_binaries, "prometheus-node-exporter"):
        services.append(node_exporter(node_binary, host, ports.node_exporter))
    if prometheus_binary := installed("prometheus", ("prometheus",), "prometheus"):
        targets = {"backend": ports.api, "pipeline": ports.dashboard, "model-server": ports.model}
        targets["node"] = ports.node_exporter
        folder = Path(settings.var_dir) / "prometheus"
        config = write_config(folder, {job: f"{host}:{port}" for job, port in targets.items()})
        services.append(prometheus(prometheus_binary, config, folder / "data", host, ports.prometheus))
    return services


def local_stack(settings: Settings, host: str, ports: Ports, watch_interval_s: float) -> list[Service]:
    """Every service of `doodle run`, each told where the others listen."""
    ui_origins = [f"http://{name}:{ports.ui}" for name in (host, "localhost", "127.0.0.1")]
    wired = settings.model_copy(
        update={
            "mlflow_hosted_model_url": f"http://{host}:{ports.model}/invocations/",
            "ui_backend_url": f"http://{host}:{ports.api}",
        }
    )
    # Only the backend's list grows: the viewer keeps answering any origin unless CORS_ORIGINS is set.
    backend_origins = sorted(set(settings.backend_cors_origins()) | set(ui_origins))
    return [
        mlflow_server(wired, host, ports.mlflow),
        model_server(wired, host, ports.model),
        backend(wired.model_copy(update={"cors_origins": backend_origins}), host, ports.api),
        ui(wired, host, ports.ui),
        dashboard(wired, host, ports.dashboard),
        pipeline_watcher(wired, watch_interval_s),
        *monitoring(wired, host, ports),
    ]
