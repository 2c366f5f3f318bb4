"""A Docker engine, the doodle image and compose projects, for the container tests.

The tests drive the `docker` client first on PATH (its version is printed) and Compose 1.29
(`docker-compose`), whose compose-spec subset the files keep to. They run wherever an engine answers;
with DOODLE_DOCKER_TESTS=required (as `.ci/run` sets) a missing engine or image fails instead of skipping.
"""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.utils.network import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOODLE_IMAGE = "doodle:0.1.0"
DOCKERFILE = REPO / "deploy" / "docker" / "doodle.Dockerfile"
MIRROR_ARGUMENTS = ("TORCH_INDEX_URL", "PIP_INDEX_URL")
TEST_PROJECT_PREFIX = "doodletest"
GRAFANA_IMAGE = "grafana/grafana:11.2.2"
SECRETS = {"POSTGRES_PASSWORD": "compose-test-secret", "GRAFANA_ADMIN_PASSWORD": "compose-test-secret"}
# compose variable -> the service port it publishes
PUBLISHED = {
    "API_PORT": 8000,
    "MODEL_SERVER_PORT": 5002,
    "UI_PORT": 9080,
    "VIEWER_PORT": 8001,
    "MLFLOW_PORT": 5000,
    "PROMETHEUS_PORT": 9090,
    "GRAFANA_PORT": 3000,
}


def required() -> bool:
    return os.environ.get("DOODLE_DOCKER_TESTS") == "required"


def skip_or_fail(message: str) -> None:
    if required():
        pytest.fail(message)
    pytest.skip(message)


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done


def engine_version() -> str:
    """The client's and the engine's versions; skips (or fails) when no engine answers."""
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        skip_or_fail("docker and docker-compose are needed: apt-get install docker.io docker-compose")
    done = docker("version", "--format", "client {{.Client.Version}}, engine {{.Server.Version}}", check=False)
    if done.returncode != 0:
        skip_or_fail(f"no Docker engine answers: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


@contextmanager
def engine_lock() -> Iterator[None]:
    """One container test run per engine at a time: they share the image tag and the host's port 9100."""
    with open(Path(tempfile.gettempdir()) / "doodle-docker-tests.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def remove_stale_projects() -> list[str]:
    """Take down the compose projects of test runs killed before their clean-up; returns their names.

    Call it under `engine_lock`: no other test run is live then, so every such project is stale.
    """
    project_label = '--format={{.Label "com.docker.compose.project"}}'
    names = set(docker("ps", "-a", "--filter=label=com.docker.compose.project", project_label).stdout.split())
    stale = sorted(name for name in names if name.startswith(TEST_PROJECT_PREFIX))
    for name in stale:
        ComposeProject(name=name).compose("down", "-v", "--remove-orphans", check=False)
    return stale


LIST_COMMANDS = {
    "services": ("service", "ls"),
    "containers": ("ps", "-a"),
    "networks": ("network", "ls"),
    "volumes": ("volume", "ls"),
    "configs": ("config", "ls"),
}


def labelled_leftovers(label: str, kinds: tuple[str, ...]) -> dict[str, list[str]]:
    """Ids of each kind of engine object (see LIST_COMMANDS) that carry `label` ("key=value")."""
    return {kind: docker(*LIST_COMMANDS[kind], "-q", f"--filter=label={label}").stdout.split() for kind in kinds}


def image_available(image: str) -> bool:
    """Present, or pulled now; False when no registry has it within a minute."""
    if docker("image", "inspect", image, check=False).returncode == 0:
        return True
    try:
        return docker("pull", "-q", image, timeout=60, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build_doodle_image() -> float:
    """Build the project's image from the working tree; returns the seconds it took.

    TORCH_INDEX_URL and PIP_INDEX_URL, when set, go to the build as its mirror arguments.
    """
    mirrors = [
        f"--build-arg={name}={os.environ[name]}" for name in ("TORCH_INDEX_URL", "PIP_INDEX_URL") if name in os.environ
    ]
    started = time.monotonic()
    docker(
        "build", "-q", "--network=host", *mirrors, "-f", str(DOCKERFILE), "-t", DOODLE_IMAGE, str(REPO), timeout=1800
    )
    return time.monotonic() - started


def wait_for(what: str, condition, timeout_s: float, interval_s: float = 1.0):
    """Poll `condition` until it returns a truthy value; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (httpx.HTTPError, AssertionError, KeyError, ValueError) as error:
            last_error = error
        time.sleep(interval_s)
    pytest.fail(f"{what} within {timeout_s:.0f} s" + (f"; last error: {last_error}" if last_error else ""))


@dataclass
class ComposeProject:
    """docker-compose.yml as a throw-away project: its own name, volumes and free 127.0.0.1 ports."""

    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"{TEST_PROJECT_PREFIX}{uuid.uuid4().hex[:8]}")
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PUBLISHED})
    services: list[str] = field(default_factory=list)  # the ones `up` starts

    def url(self, variable: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            **SECRETS,
            **{name: str(port) for name, port in self.ports.items()},
            "BIND_ADDRESS": "127.0.0.1",
            **self.env,
        }
        command = ["docker-compose", "-p", self.name, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed: {done.stderr.strip()[-3000:]}")
        return done

    def containers(self, service: str | None = None, every: bool = False) -> list[dict]:
        """`docker inspect` of the project's containers (only running ones unless `every`)."""
        labels = [f"--filter=label=com.docker.compose.project={self.name}"]
        if service:
            labels.append(f"--filter=label=com.docker.compose.service={service}")
        ids = docker("ps", "-q", *(["-a"] if every else []), *labels).stdout.split()
        return json.loads(docker("inspect", *ids).stdout) if ids else []

    def wait_healthy(self, services: list[str], timeout_s: float = 420) -> None:
        """Every container of `services` healthy; a one-shot service exited 0."""

        def healthy() -> bool:
            for service in services:
                found = self.containers(service, every=True)
                if not found:
                    return False
                for container in found:
                    state = container["State"]
                    if container["HostConfig"]["RestartPolicy"]["Name"] == "no":
                        if state["Status"] != "exited" or state["ExitCode"] != 0:
                            return False
                    elif state.get("Health", {}).get("Status") != "healthy":
                        return False
            return True

        try:
            wait_for(f"{', '.join(services)} healthy", healthy, timeout_s, interval_s=3)
        except pytest.fail.Exception:
            print(self.compose("logs", "--tail=40", check=False).stdout[-20000:])  # noqa: T201
            raise

    def address(self, container: dict) -> str:
        """The container's address on the project's network, as the host reaches it."""
        (network,) = container["NetworkSettings"]["Networks"].values()
        return network["IPAddress"]

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of the project still on the engine."""
        return labelled_leftovers(f"com.docker.compose.project={self.name}", ("containers", "networks", "volumes"))
