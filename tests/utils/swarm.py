"""A single-node Docker Swarm and deploy/swarm/doodle-stack.yml on it, for the container tests.

The stack is rendered with `docker stack config` (a client newer than 20.10: variables substituted, config
paths made absolute), stripped of the services the engine cannot run, and deployed from that file.
"""

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.utils.docker import (
    LIST_COMMANDS,
    PUBLISHED,
    REPO,
    SECRETS,
    docker,
    labelled_leftovers,
    skip_or_fail,
    wait_for,
)
from tests.utils.network import free_port

STACK_FILE = REPO / "deploy" / "swarm" / "doodle-stack.yml"
GATEWAY_BRIDGE = "docker_gwbridge"
# The bridge through which a node publishes host-mode ports; this option is the address they listen on.
HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def gateway_binding() -> str | None:
    """The address docker_gwbridge publishes ports on ("" for every interface); None if it is absent."""
    done = docker("network", "inspect", GATEWAY_BRIDGE, check=False)
    if done.returncode != 0:
        return None
    (network,) = json.loads(done.stdout)
    return network["Options"].get(HOST_BINDING, "")


@contextmanager
def single_node_swarm() -> Iterator[bool]:
    """This engine as a swarm manager whose published ports listen on 127.0.0.1 only.

    Joins (and yields True) only if the engine is in no swarm: it first makes docker_gwbridge bound to
    127.0.0.1, and at the end leaves the swarm and removes that bridge again.
    """
    state = swarm_state()
    if state == "active":
        if docker("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() != "true":
            skip_or_fail("this engine is a swarm worker: the stack needs a manager")
        if gateway_binding() != "127.0.0.1":
            skip_or_fail(f"this swarm publishes ports beyond 127.0.0.1 ({GATEWAY_BRIDGE} {HOST_BINDING} unset)")
        yield False
        return
    if state != "inactive":
        skip_or_fail(f"the engine's swarm state is {state!r}")
    made_bridge = gateway_binding() is None
    if made_bridge:
        docker(
            "network", "create", "--driver=bridge",
            f"--opt=com.docker.network.bridge.name={GATEWAY_BRIDGE}",
            "--opt=com.docker.network.bridge.enable_icc=false",
            "--opt=com.docker.network.bridge.enable_ip_masquerade=true",
            f"--opt={HOST_BINDING}=127.0.0.1",
            GATEWAY_BRIDGE,
        )  # fmt: skip
    elif gateway_binding() != "127.0.0.1":
        skip_or_fail(f"{GATEWAY_BRIDGE} exists and publishes ports beyond 127.0.0.1: remove it first")
    try:
        docker(
            "swarm", "init", "--advertise-addr=127.0.0.1", "--listen-addr=127.0.0.1:2377", "--data-path-addr=127.0.0.1"
        )
        yield True
    finally:
        docker("swarm", "leave", "--force", check=False)
        if made_bridge:
            docker("network", "rm", GATEWAY_BRIDGE, check=False)


@dataclass
class SwarmStack:
    """The stack file deployed under a throw-away name, with free 127.0.0.1 ports."""

    env: dict[str, str] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()  # services not deployed, with their configs and volumes
    name: str = field(default_factory=lambda: f"doodleswarm{uuid.uuid4().hex[:8]}")
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PUBLISHED})

    def url(self, variable: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def service(self, short_name: str) -> str:
        return f"{self.name}_{short_name}"

    def render(self, directory: Path) -> Path:
        """The stack file as `docker stack config` resolves it, without the left-out services."""
        if not re.search(r"^\s+config\s", docker("stack", "--help").stdout, re.MULTILINE):
            skip_or_fail("`docker stack config` is needed: a docker client newer than 20.10 first on PATH")
        variables = {**SECRETS, **{name: str(port) for name, port in self.ports.items()}, **self.env}
        done = subprocess.run(
            ["docker", "stack", "config", "-c", str(STACK_FILE)],
            env={**os.environ, **variables},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"docker stack config failed: {done.stderr.strip()[-2000:]}"
        config = yaml.safe_load(done.stdout)
        for service in self.left_out:
            removed = config["services"].pop(service)
            for volume in removed.get("volumes", []):
                config["volumes"].pop(volume["source"], None)
            for item in removed.get("configs", []):
                config["configs"].pop(item["source"])
        rendered = directory / f"{self.name}.yml"
        rendered.write_text(yaml.safe_dump(config))
        return rendered

    def deploy(self, rendered: Path) -> None:
        docker("stack", "deploy", "--detach=true", "--resolve-image=never", "-c", str(rendered), self.name)

    def services(self) -> dict[str, dict]:
        """`docker service inspect` of the stack's services, by short name."""
        ids = docker("service", "ls", "-q", f"--filter=label={STACK_LABEL}={self.name}").stdout.split()
        found = json.loads(docker("service", "inspect", *ids).stdout) if ids else []
        return {spec["Spec"]["Name"].removeprefix(f"{self.name}_"): spec for spec in found}

    def tasks(self, short_name: str) -> list[dict]:
        """`docker inspect` of the service's tasks, past ones included."""
        ids = docker("service", "ps", "-q", self.service(short_name)).stdout.split()
        return json.loads(docker("inspect", "--type=task", *ids).stdout) if ids else []

    def containers(self, short_name: str | None = None) -> list[dict]:
        """`docker inspect` of the running containers of one service, or of the whole stack."""
        label = f"{SERVICE_LABEL}={self.service(short_name)}" if short_name else f"{STACK_LABEL}={self.name}"
        ids = docker("ps", "-q", f"--filter=label={label}").stdout.split()
        return json.loads(docker("inspect", *ids).stdout) if ids else []

    def converged(self) -> bool:
        """Every service at its replica count with healthy containers; a one-shot service completed."""
        services = self.services()
        running: dict[str, list[dict]] = {}
        for container in self.containers():
            running.setdefault(container["Config"]["Labels"][SERVICE_LABEL], []).append(container)
        for short_name, service in services.items():
            spec = service["Spec"]
            if spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure":
                if "complete" not in [task["Status"]["State"] for task in self.tasks(short_name)]:
                    return False
                continue
            containers = running.get(spec["Name"], [])
            wanted = spec["Mode"].get("Replicated", {}).get("Replicas", 1)  # global: one node here
            if len(containers) != wanted:
                return False
            if any(container["State"].get("Health", {}).get("Status") != "healthy" for container in containers):
                return False
            if service.get("UpdateStatus", {}).get("State") in ("updating", "rollback_started"):
                return False
        return bool(services)

    def wait_converged(self, timeout_s: float) -> None:
        try:
            wait_for(f"stack {self.name} converged and healthy", self.converged, timeout_s, interval_s=2)
        except pytest.fail.Exception:
            print(docker("stack", "ps", "--no-trunc", self.name, check=False).stdout[-6000:])  # noqa: T201
            raise

    @staticmethod
    def address(container: dict) -> str:
        """The container's address on this node's docker_gwbridge: the host reaches it there."""
        (network,) = json.loads(docker("network", "inspect", GATEWAY_BRIDGE).stdout)
        return network["Containers"][container["Id"]]["IPv4Address"].split("/")[0]

    def remove(self, timeout_s: float = 120) -> None:
        """`docker stack rm`, then, once its containers are gone, the stack's named volumes."""
        docker("stack", "rm", self.name, check=False)
        label = f"--filter=label={STACK_LABEL}={self.name}"

        def containers_gone() -> bool:
            return not docker("ps", "-aq", label).stdout.split()

        wait_for(f"stack {self.name}'s containers removed", containers_gone, timeout_s)
        volumes = docker("volume", "ls", "-q", label).stdout.split()
        if volumes:
            docker("volume", "rm", *volumes)

        def network_gone() -> bool:
            return not docker("network", "ls", "-q", label).stdout.split()

        wait_for(f"stack {self.name}'s network removed", network_gone, timeout_s)

    def leftovers(self) -> dict[str, list[str]]:
        """Services, containers, networks, volumes and configs of the stack still on the engine."""
        return labelled_leftovers(f"{STACK_LABEL}={self.name}", tuple(LIST_COMMANDS))
