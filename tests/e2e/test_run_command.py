"""`doodle run` (what `make run` calls): the whole local stack up, used, and stopped without orphans."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from doodle.config import settings_env, settings_under
from tests.utils.images import b64
from tests.utils.network import free_port

pytestmark = pytest.mark.e2e


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


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_run_starts_every_service_and_ctrl_c_leaves_no_process(tmp_path, quickdraw_test):
    names = ("mlflow", "model", "api", "ui", "dashboard", "prometheus", "node-exporter")
    ports = {name: free_port() for name in names}
    settings = settings_under(tmp_path)
    command = [sys.executable, "-m", "doodle.cli", "run", "--watch-interval", "3600"]
    command += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    output = open(tmp_path / "run.out", "w+")
    process = subprocess.Popen(
        command, env={**os.environ, **settings_env(settings)}, stdout=output, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while "All services are up" not in (tmp_path / "run.out").read_text():
            assert process.poll() is None, (tmp_path / "run.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "stack did not come up in 240 s"
            time.sleep(1)
        table = (tmp_path / "run.out").read_text()
        assert table.count("healthy") >= 6 and "NOT HEALTHY" not in table

        ui_page = httpx.get(f"http://127.0.0.1:{ports['ui']}/config.js").text
        assert f"http://127.0.0.1:{ports['api']}" in ui_page  # the UI is told where the backend is
        answer = httpx.post(
            f"http://127.0.0.1:{ports['api']}/invocations/", json={"inputs": b64(quickdraw_test.images[0])}
        )
        assert answer.status_code == 200 and answer.json()["predictions"][0] in quickdraw_test.categories
        runs = httpx.get(f"http://127.0.0.1:{ports['dashboard']}/pipeline_runs")
        assert runs.status_code == 200
        if shutil.which("prometheus"):  # started when installed, scraping the stack's own ports
            assert "prometheus" in table
            targets = httpx.get(f"http://127.0.0.1:{ports['prometheus']}/api/v1/targets").json()
            scraped = {t["scrapeUrl"] for t in targets["data"]["activeTargets"]}
            assert f"http://127.0.0.1:{ports['api']}/metrics" in scraped

        children = descendants(process.pid)
        assert len(children) >= 6
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    assert code == 0
    time.sleep(1)
    assert [pid for pid in children if alive(pid)] == []
