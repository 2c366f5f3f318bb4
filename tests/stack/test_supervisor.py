"""The supervisor's restart policy, and what it does with real child processes that exit."""

import logging
import sys
import threading
import time

import pytest

from doodle.stack.catalogue import Service
from doodle.stack.supervisor import RestartPolicy, StartupError, run, running, supervise
from tests.utils.network import free_port

FAST = RestartPolicy(first_delay_s=0.01, max_delay_s=0.05)  # the default give-up rule, tiny delays

FAILS_ON_FIRST_RUN = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.touch()
    time.sleep(0.5)  # past start-up: the supervisor has seen it running
    sys.exit(3)
marker.with_suffix(".again").touch()
time.sleep(60)
"""


def python(name: str, code: str, *args: str, health_url: str | None = None) -> Service:
    """A service that is a few lines of Python; healthy while it runs unless it has a `health_url`."""
    return Service(name, [sys.executable, "-c", code, *args], name, health_url)


def sleeper(name: str = "sleeper", health_url: str | None = None) -> Service:
    return python(name, "import time; time.sleep(60)", health_url=health_url)


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def test_restart_policy_doubles_the_delay_up_to_the_cap():
    policy = RestartPolicy(first_delay_s=1.0, max_delay_s=8.0, max_restarts=10, window_s=60.0)
    restarts: list[float] = []
    delays = []
    for second in range(6):
        delays.append(policy.delay_s(restarts, now=float(second)))
        restarts.append(float(second))
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_restart_policy_gives_up_when_a_sixth_restart_within_a_minute_is_needed():
    policy = RestartPolicy()
    five_restarts = [0.0, 5.0, 10.0, 20.0, 40.0]
    assert policy.delay_s(five_restarts[:4], now=45.0) is not None
    assert policy.delay_s(five_restarts, now=59.0) is None


def test_restart_policy_forgets_restarts_older_than_the_window():
    policy = RestartPolicy()
    old_restarts = [0.0, 1.0, 3.0, 7.0, 15.0]
    assert policy.delay_s(old_restarts, now=200.0) == policy.first_delay_s


@pytest.mark.integration
def test_supervise_restarts_a_service_that_exits_and_logs_the_restart(tmp_path, caplog):
    marker = tmp_path / "ran"
    flaky = python("flaky", FAILS_ON_FIRST_RUN, str(marker))
    services = [flaky, sleeper()]
    stopping = threading.Event()
    caplog.set_level(logging.INFO, logger="doodle.stack.supervisor")
    with running(services, tmp_path / "logs"):
        supervising = threading.Thread(target=supervise, args=(services, tmp_path / "logs", stopping, FAST))
        supervising.start()
        deadline = time.monotonic() + 30
        while not marker.with_suffix(".again").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stopping.set()
        supervising.join()
        assert flaky.process.poll() is None  # the second run keeps going

    assert marker.with_suffix(".again").exists()
    assert "service restarted name=flaky exit_code=3 attempt=1" in messages(caplog)


@pytest.mark.integration
def test_run_stops_everything_and_names_a_service_that_keeps_dying(tmp_path, caplog):
    crasher = python("crasher", "import sys, time; time.sleep(0.3); sys.exit(3)")
    steady = sleeper()
    caplog.set_level(logging.INFO, logger="doodle.stack.supervisor")

    code = run([steady, crasher], tmp_path / "logs", policy=FAST)

    assert code == 1
    log = messages(caplog)
    assert log.count("service restarted name=crasher") == FAST.max_restarts
    assert "crasher keeps dying" in log
    assert steady.process.poll() is not None


@pytest.mark.integration
def test_run_names_the_service_that_dies_during_start_up(tmp_path, caplog):
    """The slow one is still starting (nothing answers its health check) when the broken one exits."""
    slow = sleeper("slow", health_url=f"http://127.0.0.1:{free_port()}/health")
    broken = python("broken", "import sys; sys.exit(3)")

    code = run([slow, broken], tmp_path / "logs", policy=FAST)

    assert code == 1
    (stopped,) = [line for line in messages(caplog).splitlines() if line.startswith("stack stopped")]
    assert stopped.startswith("stack stopped: broken exited during start-up with code 3")
    assert slow.process.poll() is not None


@pytest.mark.integration
def test_wait_healthy_names_the_services_still_unhealthy_at_the_timeout(tmp_path):
    slow = sleeper("slow", health_url=f"http://127.0.0.1:{free_port()}/health")
    ready = sleeper("ready")
    with pytest.raises(StartupError, match="not healthy after 1 s: slow") as raised:
        with running([slow, ready], tmp_path / "logs", timeout_s=1):
            pass
    assert str(raised.value).count("(see ") == 1  # ready is not blamed
    assert slow.process.poll() is not None and ready.process.poll() is not None
