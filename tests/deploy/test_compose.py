"""docker-compose.yml and Grafana's files: valid, complete, and wired to one Prometheus data source."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from doodle.cli import build_parser
from tests.utils.deploy import COMPOSE_FILE, GRAFANA_DIR, REPO, load_dashboards, panels, required_tool

SERVICES = {
    "fastapi-backend",
    "ui",
    "prometheus",
    "grafana",
    "pipeline-viewer",
    "postgres",
    "mlflow",
    "model-server",
    "node-exporter",
    "pipeline-watcher",
    "bootstrap",
    "load-balancer",
}
SCALED = {"fastapi-backend", "model-server"}
SECRETS = {"GRAFANA_ADMIN_PASSWORD": "grafana-test-secret", "POSTGRES_PASSWORD": "postgres-test-secret"}
DASHBOARDS = {"api.json", "model.json", "system.json", "pipeline.json"}


def compose_config(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`docker-compose config` with only `env` set: an empty --env-file hides any local .env."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [required_tool("docker-compose"), "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config", *args],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def raw() -> dict:
    """docker-compose.yml as written, anchors merged, variables not substituted."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """docker-compose.yml as Compose resolves it, with the secrets set."""
    done = compose_config(tmp_path_factory.mktemp("compose"), SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.mark.integration
def test_compose_config_is_valid_with_the_secrets_set(tmp_path):
    done = compose_config(tmp_path, SECRETS, "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


@pytest.mark.integration
@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_config_fails_clearly_without_a_secret(tmp_path, secret):
    env = {name: value for name, value in SECRETS.items() if name != secret}
    done = compose_config(tmp_path, env, "-q")
    assert done.returncode != 0
    assert f"set {secret} in .env" in done.stderr


def test_compose_lists_every_service_with_a_healthcheck(raw):
    assert set(raw["services"]) == SERVICES
    for name, service in raw["services"].items():
        if service.get("restart") == "no":  # a one-shot job: its exit status is its health
            assert name == "bootstrap"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_compose_scaled_services_publish_no_port_and_the_load_balancer_fronts_them(resolved):
    services = resolved["services"]
    for name in SCALED:
        assert "ports" not in services[name], f"{name} publishes a port, so --scale would collide on it"
    published = {
        str(port["published"]) if isinstance(port, dict) else port.split(":")[-2]
        for port in services["load-balancer"]["ports"]
    }
    assert published == {"8000", "5002"}
    haproxy = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    assert re.search(r"server-template \S+ \d+-\d+ fastapi-backend:8000", haproxy)
    assert re.search(r"server-template \S+ \d+-\d+ model-server:5002", haproxy)
    assert services["model-server"]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"


def test_compose_images_are_pinned(raw):
    for name, service in raw["services"].items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+(-[\w.]+)?", image), f"{name}: {image} is not pinned to a version"
    dockerfiles = {service["build"]["dockerfile"] for service in raw["services"].values() if "build" in service}
    for dockerfile in dockerfiles:
        base = re.search(r"^FROM (\S+)", (REPO / dockerfile).read_text(), re.MULTILINE).group(1)
        assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+-[\w-]+", base), f"{dockerfile}: base {base} is not pinned"


def test_compose_secrets_have_no_default(raw):
    text = COMPOSE_FILE.read_text()
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), f"{secret} must be required, never defaulted"
    grafana = raw["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}"
    for path in GRAFANA_DIR.rglob("*"):
        if path.is_file():
            assert "admin_password" not in path.read_text().lower(), path


def mounts(service: dict) -> dict[str, str]:
    """Target -> source of a resolved service's volumes; Compose 1 prints them short, Compose 2 long."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def is_named_volume(source: str) -> bool:
    return not source.startswith(("/", "."))


def test_compose_keeps_state_in_named_volumes(resolved):
    found = {name: mounts(service) for name, service in resolved["services"].items()}
    assert found["fastapi-backend"]["/data/drawings"] == "drawings"
    assert found["pipeline-watcher"]["/data/drawings"] == "drawings"
    assert found["pipeline-viewer"]["/data/drawings"] == "drawings"
    assert found["grafana"]["/var/lib/grafana"] == "grafana-data"
    assert found["postgres"]["/var/lib/postgresql/data"] == "postgres-data"
    assert found["mlflow"]["/mlflow"] == "mlflow-data"
    named = {source for service in found.values() for source in service.values() if is_named_volume(source)}
    assert named == set(resolved["volumes"])


def test_compose_wires_the_services_together(resolved):
    services = resolved["services"]
    backend = services["fastapi-backend"]["environment"]
    assert backend["MLFLOW_HOSTED_MODEL_URL"] == "http://load-balancer:5002/invocations/"
    assert backend["IMG_DATA_LOCATION"] == services["pipeline-watcher"]["environment"]["IMG_DATA_LOCATION"]
    for name in ("bootstrap", "model-server", "pipeline-watcher"):
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    expected_url = f"postgresql+psycopg://doodle:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/doodle"
    for name in ("pipeline-viewer", "pipeline-watcher"):
        assert services[name]["environment"]["DATABASE_URL"] == expected_url
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert services["ui"]["environment"]["UI_BACKEND_URL"] == "http://localhost:8000"


def test_backend_and_watcher_share_the_training_threshold(tmp_path):
    done = compose_config(tmp_path, {**SECRETS, "MIN_NEW_IMAGES": "25"})
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert services["fastapi-backend"]["environment"]["MIN_NEW_IMAGES"] == "25"  # the page shows it
    assert services["pipeline-watcher"]["environment"]["MIN_NEW_IMAGES"] == "25"  # the watcher acts on it
    swarm = yaml.safe_load((REPO / "deploy" / "swarm" / "doodle-stack.yml").read_text())["services"]
    assert swarm["fastapi-backend"]["environment"]["MIN_NEW_IMAGES"] == "${MIN_NEW_IMAGES:-10}"
    assert swarm["pipeline-watcher"]["environment"]["MIN_NEW_IMAGES"] == "${MIN_NEW_IMAGES:-10}"


def test_compose_binds_the_config_files_that_exist(resolved):
    for name, service in resolved["services"].items():
        for source in mounts(service).values():
            if source.startswith(str(REPO)):
                assert Path(source).exists(), f"{name} mounts missing {source}"
    grafana = mounts(resolved["services"]["grafana"])
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "doodle.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert Path(grafana[dashboards_path]) == GRAFANA_DIR / "dashboards"
    assert Path(grafana["/etc/grafana/provisioning"]) == GRAFANA_DIR / "provisioning"


def _check_command(command: list[str]) -> None:
    if command[0] == "doodle":
        build_parser().parse_args(command[1:])  # exits on an unknown subcommand or flag
    elif command[:2] == ["sh", "-c"]:
        for part in command[2].split("&&"):
            words = shlex.split(part)
            _check_command(words[1:] if words[0] == "exec" else words)
    else:
        assert command[:2] == ["mlflow", "server"], command


def test_compose_commands_exist(resolved):
    for service in resolved["services"].values():
        if service["image"].startswith("doodle:"):
            _check_command(service["command"])


def test_grafana_datasource_is_prometheus_from_the_environment():
    (source,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "${PROMETHEUS_URL}"


def test_dashboards_parse_and_every_panel_queries_prometheus():
    dashboards = load_dashboards()
    assert set(dashboards) == DASHBOARDS
    assert len({board["uid"] for board in dashboards.values()}) == len(dashboards)
    for name, dashboard in dashboards.items():
        found = panels(dashboard)
        assert found, f"{name} has no panels"
        assert len({panel["id"] for panel in found}) == len(found), f"{name}: panel ids repeat"
        for panel in found:
            where = f"{name}: {panel['title']}"
            assert panel["datasource"]["uid"] == "prometheus", where
            assert panel["targets"], f"{where} has no target"
            for target in panel["targets"]:
                assert target["expr"].strip(), where
                assert target.get("datasource", {"uid": "prometheus"})["uid"] == "prometheus", where
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
