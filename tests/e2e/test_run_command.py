"""`doodle run` (what `make run` calls): the whole local stack up, used, kept up, and stopped without orphans."""

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from doodle.config import settings_env, settings_under
from doodle.stack.catalogue import Ports
from tests.utils.images import b64
from tests.utils.network import free_port

pytestmark = pytest.mark.e2e

UP_WITHIN_S = 240


@dataclass
class Run:
    process: subprocess.Popen
    ports: Ports
    output: Path  # stdout and stderr of `doodle run`

    def text(self) -> str:
        return self.output.read_text()


def url(port: int, path: str = "") -> str:
    return f"http://127.0.0.1:{port}{path}"


def free_ports() -> Ports:
    return Ports(**{field.name: free_port() for field in dataclasses.fields(Ports)})


@contextmanager
def doodle_run(tmp_path: Path, ports: Ports) -> Iterator[Run]:
    """`doodle run` on `ports` with its state under `tmp_path`; stopped with Ctrl-C (SIGINT) at the end."""
    settings = settings_under(tmp_path)
    command = [sys.executable, "-m", "doodle.cli", "run", "--watch-interval", "3600"]
    for name, port in dataclasses.asdict(ports).items():
        command += [f"--{name.replace('_', '-')}-port", str(port)]
    with open(tmp_path / "run.out", "w") as output:
        process = subprocess.Popen(
            command, env={**os.environ, **settings_env(settings)}, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield Run(process, ports, tmp_path / "run.out")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def wait_until_up(run: Run) -> str:
    """Wait for the table `doodle run` prints once every service is healthy; returns the output so far."""
    deadline = time.monotonic() + UP_WITHIN_S
    while "All services are up" not in run.text():
        assert run.process.poll() is None, run.text()[-3000:]
        assert time.monotonic() < deadline, f"stack did not come up in {UP_WITHIN_S} s"
        time.sleep(1)
    return run.text()


def stop(run: Run) -> int:
    run.process.send_signal(signal.SIGINT)
    return run.process.wait(timeout=60)


def descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to `pid`."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def left_behind(root: Path) -> list[int]:
    """Live processes that carry the settings of the stack under `root` in their environment."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if str(root).encode() in environ.read_bytes() and alive(int(environ.parent.name)):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def running_child(run: Run, subcommand: str) -> int:
    """Pid of the stack's `doodle <subcommand>` process."""
    for pid in descendants(run.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:4] == [b"-m", b"doodle.cli", subcommand.encode()] and alive(pid):
            return pid
    pytest.fail(f"no `doodle {subcommand}` process under doodle run")


def predict(run: Run, image) -> httpx.Response:
    return httpx.post(url(run.ports.api, "/invocations/"), json={"inputs": b64(image)}, timeout=10)


def test_run_starts_every_service_and_ctrl_c_leaves_no_process(tmp_path, quickdraw_test):
    with doodle_run(tmp_path, free_ports()) as run:
        table = wait_until_up(run)
        assert table.count("healthy") >= 6 and "NOT HEALTHY" not in table

        ui_page = httpx.get(url(run.ports.ui, "/config.js")).text
        assert url(run.ports.api) in ui_page  # the UI is told where the backend is
        answer = predict(run, quickdraw_test.images[0])
        assert answer.status_code == 200 and answer.json()["predictions"][0] in quickdraw_test.categories
        assert httpx.get(url(run.ports.dashboard, "/pipeline_runs")).status_code == 200
        if shutil.which("prometheus"):  # started when installed, scraping the stack's own ports
            assert "prometheus" in table
            targets = httpx.get(url(run.ports.prometheus, "/api/v1/targets")).json()
            scraped = {t["scrapeUrl"] for t in targets["data"]["activeTargets"]}
            assert url(run.ports.api, "/metrics") in scraped

        assert len(descendants(run.process.pid)) >= 6
        assert stop(run) == 0
    time.sleep(1)
    assert left_behind(tmp_path) == []


def test_run_restarts_a_killed_model_server_and_the_backend_recovers(tmp_path, quickdraw_test):
    with doodle_run(tmp_path, free_ports()) as run:
        wait_until_up(run)
        assert predict(run, quickdraw_test.images[0]).status_code == 200

        os.kill(running_child(run, "serve-model"), signal.SIGKILL)
        statuses = [predict(run, quickdraw_test.images[0]).status_code]
        deadline = time.monotonic() + 90  # the model server imports torch and MLflow again
        while statuses[-1] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            statuses.append(predict(run, quickdraw_test.images[0]).status_code)

        assert statuses[0] == 503  # the backend says at once that the model server is gone
        assert statuses[-1] == 200, f"no answer again within 90 s: {statuses[-5:]}"
        assert set(statuses) == {503, 200}
        assert "service restarted name=model-server exit_code=-9 attempt=1" in run.text()
        assert stop(run) == 0


def test_run_names_the_service_that_dies_at_start_up_and_stops_the_rest(tmp_path):
    ports = free_ports()
    with socket.create_server(("127.0.0.1", ports.api)):  # the backend cannot listen there
        with doodle_run(tmp_path, ports) as run:
            code = run.process.wait(timeout=UP_WITHIN_S)

    assert code == 1
    assert "stack stopped: backend exited during start-up" in run.text()
    assert "All services are up" not in run.text()
    time.sleep(1)
    assert left_behind(tmp_path) == []
