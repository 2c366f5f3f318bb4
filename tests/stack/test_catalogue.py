"""What `doodle run` starts: the doodle services as `doodle` commands, the monitoring when installed."""

import dataclasses
import logging
import sys

import yaml

from doodle.cli import build_parser
from doodle.config import settings_under
from doodle.stack.catalogue import Ports, local_stack, monitoring

HOST = "127.0.0.1"
# service -> (its `doodle` subcommand, its field of Ports)
DOODLE_SERVICES = {
    "model-server": ("serve-model", "model"),
    "backend": ("api", "api"),
    "ui": ("ui", "ui"),
    "pipeline-viewer": ("dashboard", "dashboard"),
}


def install_fakes(folder, *names: str) -> str:
    """Executables that do nothing, in `folder`; returns the folder as a PATH."""
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return str(folder)


def test_local_stack_runs_each_doodle_service_as_its_doodle_command_on_its_port(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", install_fakes(tmp_path / "bin"))
    ports = Ports(model=15002, api=18000, ui=19080, dashboard=18001)
    services = {service.name: service for service in local_stack(settings_under(tmp_path), HOST, ports, 30.0)}

    for name, (subcommand, port) in DOODLE_SERVICES.items():
        command = services[name].command
        assert command[:4] == [sys.executable, "-m", "doodle.cli", subcommand]
        args = build_parser().parse_args(command[3:])
        assert (args.host, args.port) == (HOST, getattr(ports, port))
    watcher = build_parser().parse_args(services["pipeline-watcher"].command[3:])
    assert (watcher.pipeline_command, watcher.interval) == ("watch", 30.0)


def test_local_stack_tells_each_service_where_the_others_listen(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", install_fakes(tmp_path / "bin"))
    ports = Ports(model=15002, api=18000, ui=19080)
    services = {service.name: service for service in local_stack(settings_under(tmp_path), HOST, ports, 30.0)}

    env = services["backend"].env
    assert env["MLFLOW_HOSTED_MODEL_URL"] == f"http://{HOST}:15002/invocations/"
    assert f"http://{HOST}:19080" in env["CORS_ORIGINS"]
    assert services["ui"].env["UI_BACKEND_URL"] == f"http://{HOST}:18000"


def test_monitoring_names_each_missing_binary_and_its_debian_package(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", install_fakes(tmp_path / "bin"))
    caplog.set_level(logging.WARNING, logger="doodle.stack.catalogue")

    assert monitoring(settings_under(tmp_path), HOST, Ports()) == []

    log = caplog.text
    assert "name=prometheus missing_binary=prometheus debian_package=prometheus" in log
    assert "missing_binary=prometheus-node-exporter or node_exporter debian_package=prometheus-node-exporter" in log


def test_monitoring_aims_the_shipped_prometheus_config_at_the_stack_when_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", install_fakes(tmp_path / "bin", "prometheus", "prometheus-node-exporter"))
    settings = settings_under(tmp_path / "var")
    ports = Ports(model=15002, api=18000, dashboard=18001, prometheus=19090, node_exporter=19100)

    services = monitoring(settings, HOST, ports)

    assert [service.name for service in services] == ["node-exporter", "prometheus"]
    config = yaml.safe_load((settings.var_dir / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in config["scrape_configs"]
        if "static_configs" in job
    }
    assert targets == {
        "backend": [f"{HOST}:18000"],
        "pipeline": [f"{HOST}:18001"],
        "model-server": [f"{HOST}:15002"],
        "node": [f"{HOST}:19100"],
    }
    assert (settings.var_dir / "prometheus" / "alerts.yml").exists()
    assert f"--web.listen-address={HOST}:19090" in services[1].command


def test_every_port_flag_defaults_to_ports():
    defaults = dataclasses.asdict(Ports())
    run = build_parser().parse_args(["run"])
    assert {name: getattr(run, f"{name}_port") for name in defaults} == defaults
    for subcommand, port in DOODLE_SERVICES.values():
        assert build_parser().parse_args([subcommand]).port == defaults[port]
