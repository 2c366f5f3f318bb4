"""The deployment files, and every PromQL expression they hold, as the tests read them."""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from doodle.stack.prometheus_config import SHIPPED_DIR as PROMETHEUS_DIR

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"

# What Grafana puts in for its own variables when the tests run a panel's query by hand.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@dataclass(frozen=True)
class Query:
    source: str  # "<dashboard file>/<panel title>/<refId>" or "alert <name>"
    expr: str


def load_dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found += [panel, *panel.get("panels", [])]
    return found


def with_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_queries() -> list[Query]:
    """Every panel target's expression, Grafana's variables replaced by concrete values."""
    return [
        Query(f"{name}/{panel['title']}/{target['refId']}", with_grafana_variables(target["expr"]))
        for name, dashboard in load_dashboards().items()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def required_tool(*names: str) -> str:
    """Path of the first of `names` on PATH; missing fails in CI and skips elsewhere."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' or '.join(names)} not found: apt-get install prometheus prometheus-node-exporter docker-compose"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
