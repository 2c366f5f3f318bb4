"""The Prometheus configuration, alert rules and dashboard queries, checked by the real promtool."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.utils.deploy import (
    ALERTS_FILE,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    alert_rules,
    dashboard_queries,
    required_tool,
)

pytestmark = pytest.mark.integration

ALERT_TESTS = Path(__file__).parent / "alerts_test.yml"
JOBS = {"backend", "pipeline", "model-server", "node", "windows"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([required_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_prometheus_config_is_valid():
    done = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_prometheus_config_scrapes_every_job():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == JOBS
    assert config["rule_files"] == ["alerts.yml"]
    (model_server,) = [job for job in config["scrape_configs"] if job["job_name"] == "model-server"]
    assert model_server["metrics_path"] == "/ping"


def test_windows_targets_example_is_a_valid_target_file(tmp_path):
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS_FILE, tmp_path / "alerts.yml")
    (tmp_path / "targets").mkdir()
    shutil.copy(PROMETHEUS_DIR / "targets" / "windows.yml.example", tmp_path / "targets" / "windows.yml")
    done = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr


def test_alert_rules_are_valid():
    done = promtool("check", "rules", str(ALERTS_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_alert_rules_pass_their_unit_tests():
    done = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing():
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    assert firing == {rule["alert"] for rule in alert_rules()}


def test_every_alert_waits_and_explains_itself():
    for rule in alert_rules():
        assert rule.get("for"), f"{rule['alert']} fires on a single evaluation"
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each panel's expression as a recording rule, without a server."""
    queries = dashboard_queries()
    rules = [{"record": f"dashboard:query_{n}", "expr": query.expr} for n, query in enumerate(queries)]
    (tmp_path / "dashboards.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = promtool("check", "rules", str(tmp_path / "dashboards.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout
