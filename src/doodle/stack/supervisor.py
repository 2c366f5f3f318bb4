"""Run services as child processes: start, wait until healthy, restart the ones that exit, stop them all.

Like compose's `restart: unless-stopped`: a service that exits after start-up is restarted with a
backoff, and the stack stops only when asked (SIGINT, SIGTERM) or when one service keeps dying.
"""

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from doodle.stack.catalogue import Service

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 120.0  # the model server imports torch and MLflow and loads the model first
STOP_GRACE_S = 10.0
POLL_S = 0.25


class StartupError(RuntimeError):
    """A service died, or never answered its health check, during start-up."""


class ServiceKeepsDyingError(RuntimeError):
    """A service exited more often than the restart policy allows."""


@dataclass(frozen=True)
class RestartPolicy:
    """Wait `first_delay_s`, doubling with each recent restart up to `max_delay_s`; give up on a service
    that would need more than `max_restarts` restarts within `window_s`."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 60.0

    def recent(self, restarts: list[float], now: float) -> int:
        """How many of the `restarts` (monotonic times) fall within the window before `now`."""
        return sum(1 for at in restarts if now - at < self.window_s)

    def delay_s(self, restarts: list[float], now: float) -> float | None:
        """Seconds to wait before restarting a service that exited at `now`; None: give up."""
        recent = self.recent(restarts, now)
        if recent >= self.max_restarts:
            return None
        return min(self.max_delay_s, self.first_delay_s * 2**recent)


def start(service: Service, log_dir: Path) -> None:
    """Start the service in its own process group, its output appended to `<log_dir>/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    service.log_file = log_dir / f"{service.name}.log"
    with open(service.log_file, "ab") as log:
        service.process = subprocess.Popen(
            service.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **service.env},
            start_new_session=True,  # its own process group, so stopping it stops its workers too
        )
    logger.info("service started name=%s pid=%d", service.name, service.process.pid)


def exit_code(service: Service) -> int | None:
    """The process's exit code (negative: killed by that signal), or None while it runs."""
    return None if service.process is None else service.process.poll()


def is_healthy(service: Service) -> bool:
    if service.process is None or service.process.poll() is not None:
        return False
    if service.health_url is None:
        return True
    try:
        return httpx.get(service.health_url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(services: list[Service], timeout_s: float, stopping: threading.Event | None = None) -> None:
    """Return once every service answers its health check (or `stopping` is set).

    Raises StartupError naming the service that exited, or those still unhealthy at the timeout.
    """
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending and not (stopping and stopping.is_set()):
        for service in services:
            if (code := exit_code(service)) is not None:
                raise StartupError(f"{service.name} exited during start-up with code {code}, see {service.log_file}")
        pending = [service for service in pending if not is_healthy(service)]
        if pending and time.monotonic() > deadline:
            named = ", ".join(f"{service.name} (see {service.log_file})" for service in pending)
            raise StartupError(f"not healthy after {timeout_s:g} s: {named}")
        if pending:
            time.sleep(POLL_S)


def stop(services: list[Service]) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after a grace period."""
    running = [(s.name, s.process) for s in services if s.process is not None and s.process.poll() is None]
    for _, process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("service did not stop, killing name=%s", name)
            _signal_group(process, signal.SIGKILL)
            process.wait()
        _signal_group(process, signal.SIGKILL)  # stray workers of the group
        logger.info("service stopped name=%s", name)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


@contextmanager
def running(
    services: list[Service],
    log_dir: Path,
    timeout_s: float = HEALTH_TIMEOUT_S,
    stopping: threading.Event | None = None,
) -> Iterator[None]:
    """Start the services and wait until each is healthy (see wait_healthy); stop them all on leaving."""
    try:
        for service in services:
            start(service, log_dir)
        wait_healthy(services, timeout_s, stopping)
        yield
    finally:
        stop(services)


@dataclass(frozen=True)
class _Restart:
    """A restart waiting for its backoff to pass."""

    due: float  # monotonic time
    exit_code: int
    delay_s: float
    attempt: int  # restarts within the policy's window, this one included


def supervise(
    services: list[Service], log_dir: Path, stopping: threading.Event, policy: RestartPolicy = RestartPolicy()
) -> None:
    """Restart every service that exits, after the policy's backoff, until `stopping` is set.

    Raises ServiceKeepsDyingError when a service needs more restarts than the policy allows.
    """
    restarts: dict[str, list[float]] = {service.name: [] for service in services}  # monotonic times
    waiting: dict[str, _Restart] = {}
    while not stopping.wait(POLL_S):
        now = time.monotonic()
        for service in services:
            if service.name in waiting:
                if now >= waiting[service.name].due:
                    _restart(service, waiting.pop(service.name), log_dir)
                    restarts[service.name].append(now)
            elif (code := exit_code(service)) is not None:
                waiting[service.name] = _schedule(service, code, restarts[service.name], policy, now)


def _schedule(service: Service, code: int, restarts: list[float], policy: RestartPolicy, now: float) -> _Restart:
    delay_s = policy.delay_s(restarts, now)
    if delay_s is None:
        raise ServiceKeepsDyingError(
            f"{service.name} keeps dying: exit code {code} after {policy.max_restarts} restarts within "
            f"{policy.window_s:g} s, see {service.log_file}"
        )
    logger.warning("service exited name=%s exit_code=%s restart_in_s=%.1f", service.name, code, delay_s)
    if service.process is not None:
        _signal_group(service.process, signal.SIGKILL)  # workers it left behind would hold its port
    return _Restart(now + delay_s, code, delay_s, policy.recent(restarts, now) + 1)


def _restart(service: Service, restart: _Restart, log_dir: Path) -> None:
    start(service, log_dir)
    logger.warning(
        "service restarted name=%s exit_code=%s attempt=%d delay_s=%.1f",
        service.name,
        restart.exit_code,
        restart.attempt,
        restart.delay_s,
    )


def run(
    services: list[Service],
    log_dir: Path,
    on_ready: Callable[[list[Service]], None] = lambda services: None,
    policy: RestartPolicy = RestartPolicy(),
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> int:
    """Start the services, call `on_ready` once all are healthy, then keep them running until SIGINT or
    SIGTERM. Returns 0 after a requested stop, 1 when a service died during start-up or kept dying."""
    stopping = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stopping.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running(services, log_dir, health_timeout_s, stopping):
            if not stopping.is_set():
                on_ready(services)
                supervise(services, log_dir, stopping, policy)
        return 0
    except (StartupError, ServiceKeepsDyingError) as error:
        logger.error("stack stopped: %s", error)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
