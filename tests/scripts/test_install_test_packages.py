"""scripts/install-test-packages.sh, run by `make test`, against fake apt-get, sudo and id on its PATH."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-test-packages.sh"
COMMANDS = ["chromium", "promtool", "prometheus-node-exporter", "docker-compose"]  # what the tests run

pytestmark = pytest.mark.integration


def fake(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def machine(tmp_path: Path, present: list[str], uid: int, sudo: bool) -> tuple[Path, Path]:
    """A PATH holding only the `present` test commands, an `id` saying `uid`, and apt-get (and sudo)
    that record their arguments; returns (bin folder, record file)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("cat", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for command in present:
        fake(bin_dir, command)
    fake(bin_dir, "id", f"echo {uid}")
    fake(bin_dir, "apt-get", f'echo "apt-get $*" >> {record}')
    if sudo:
        fake(bin_dir, "sudo", f'[ "$1" = -v ] && exit 0; echo "sudo $1" >> {record}; exec "$@"')
    return bin_dir, record


def run_script(bin_dir: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir)}
    return subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def calls(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_nothing_installed_when_every_command_is_there(tmp_path):
    bin_dir, record = machine(tmp_path, list(COMMANDS), uid=0, sudo=False)
    done = run_script(bin_dir)
    assert done.returncode == 0, done.stderr
    assert calls(record) == []


def test_root_installs_only_the_missing_packages_without_recommends(tmp_path):
    bin_dir, record = machine(tmp_path, ["chromium", "promtool"], uid=0, sudo=False)
    done = run_script(bin_dir)
    assert done.returncode == 0, done.stderr
    update, install = calls(record)
    assert update == "apt-get update -qq"
    assert install == "apt-get install -y --no-install-recommends prometheus-node-exporter docker-compose -qq"


def test_a_user_with_sudo_installs_through_sudo(tmp_path):
    bin_dir, record = machine(tmp_path, ["promtool", "prometheus-node-exporter", "docker-compose"], uid=1000, sudo=True)
    done = run_script(bin_dir)
    assert done.returncode == 0, done.stderr
    assert calls(record) == [
        "sudo apt-get",
        "apt-get update -qq",
        "sudo env",
        "apt-get install -y --no-install-recommends chromium -qq",
    ]


def test_without_root_or_sudo_it_stops_and_prints_the_command(tmp_path):
    bin_dir, record = machine(tmp_path, ["chromium"], uid=1000, sudo=False)
    done = run_script(bin_dir)
    assert done.returncode == 1
    assert "missing: prometheus prometheus-node-exporter docker-compose" in done.stderr
    install = "sudo apt-get install -y --no-install-recommends prometheus prometheus-node-exporter docker-compose"
    assert install in done.stderr
    assert calls(record) == []
