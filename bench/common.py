"""What the bench scripts share: real drawings, free ports, a self-started stack and simulated users.

Not a script: bench/predict.py, bench/load.py, bench/soak.py and bench/capacity.py import it as
`common` (Python puts a script's own folder on sys.path).
"""

import asyncio
import json
import logging
import math
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from doodle.config import Settings, settings_under
from doodle.imaging import encode_bitmap
from doodle.model.registry import bootstrap, configure_mlflow
from doodle.stack import supervisor
from doodle.stack.catalogue import Service, backend, model_server

logger = logging.getLogger("bench.common")

QUICKDRAW = Path(__file__).resolve().parents[1].parent / "shared" / "quickdraw"
HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 180.0  # the model server imports torch and MLflow before it answers
REQUEST_TIMEOUT_S = 30.0
JSON_HEADERS = {"Content-Type": "application/json"}


def load_labelled_drawings(
    data_dir: Path, count: int, seed: int = 0, categories: list[str] | None = None
) -> list[tuple[str, str]]:
    """`count` random Quick Draw bitmaps spread over `categories` (default: every file), shuffled,
    as (category, base64 of the 784 bytes)."""
    files = sorted(data_dir.glob("*.npy"))
    if categories is not None:
        missing = set(categories) - {path.stem for path in files}
        if missing:
            raise SystemExit(f"no <category>.npy in {data_dir} for {', '.join(sorted(missing))}")
        files = [path for path in files if path.stem in categories]
    if not files:
        raise SystemExit(f"no <category>.npy files in {data_dir} (use --data)")
    rng = np.random.default_rng(seed)
    per_file = -(-count // len(files))  # ceiling division
    drawings = []
    for path in files:
        images = np.load(path, mmap_mode="r")
        rows = rng.choice(len(images), size=min(per_file, len(images)), replace=False)
        drawings += [(path.stem, encode_bitmap(np.asarray(images[row]).reshape(28, 28))) for row in rows]
    rng.shuffle(drawings)
    return drawings[:count]


def load_drawings(data_dir: Path, count: int, seed: int = 0) -> list[str]:
    """`count` random Quick Draw bitmaps spread over every category, base64 encoded, in shuffled order."""
    return [drawing for _, drawing in load_labelled_drawings(data_dir, count, seed)]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay bound until every port is chosen."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def print_log_tails(log_dir: Path, lines: int = 20) -> None:
    for log in sorted(log_dir.glob("*.log")):
        print(f"--- last {lines} lines of {log.name} ---")
        print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


def open_clients(count: int) -> list[aiohttp.ClientSession]:
    """One keep-alive connection per simulated user.

    aiohttp rather than httpx: it spends about half the CPU per request (httpx's pool also grows in cost
    with its open connections), and on 2 cores whatever the generator uses the servers cannot.
    """
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    return [aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=1)) for _ in range(count)]


def none_if_nan(value: object) -> object:
    """JSON has no NaN: a missing percentile or ratio is written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the `finally` that stops the services still runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.array(seconds) * 1e3, q)) if seconds else float("nan")


@dataclass
class Endpoints:
    """Where the simulated users send their requests: a backend's base URL."""

    backend_url: str

    @property
    def predict_url(self) -> str:
        return f"{self.backend_url}/invocations/"

    @property
    def save_url(self) -> str:
        return f"{self.backend_url}/save-image/"


@dataclass
class ServingStack(Endpoints):
    """A self-started stack: the backend's URL, the settings every service got and the services."""

    settings: Settings
    model_server: Service
    backend: Service
    extra: dict[str, Service] = field(default_factory=dict)  # by name: what `extra_services` added


@contextmanager
def serving_stack(
    root: Path,
    checkpoint: Path,
    model_server_overrides: dict[str, object] | None = None,
    extra_services: Callable[[Settings], list[Service]] | None = None,
    **overrides,
) -> Iterator[ServingStack]:
    """Register `checkpoint` at name@alias in a fresh MLflow store under `root`, start the project's model
    server (it follows the alias) and the backend on free ports; yields them, then stops both.

    Both services get every setting (`settings_under(root, **overrides)`) through their environment; the
    model server's are further changed by `model_server_overrides` (e.g. another MLFLOW_TRACKING_URI, to
    reach the same registry through a counting proxy). `extra_services(settings)` are started and
    stopped with them (e.g. the pipeline viewer) and found by name in `ServingStack.extra`.
    """
    model_port, backend_port = free_ports(2)
    settings = settings_under(root, mlflow_hosted_model_url=f"http://{HOST}:{model_port}/invocations", **overrides)
    configure_mlflow(settings)
    version = bootstrap(settings.model_name, settings.model_alias, checkpoint)
    logger.info("registered %s@%s version %s from %s", settings.model_name, settings.model_alias, version, checkpoint)

    served = model_server(settings.model_copy(update=model_server_overrides or {}), HOST, model_port)
    api = backend(settings, HOST, backend_port)
    extra = extra_services(settings) if extra_services else []
    with running([served, api, *extra], settings.log_dir):
        logger.info("model server %s, backend port %d: up", served.url, backend_port)
        yield ServingStack(
            backend_url=f"http://{HOST}:{backend_port}",
            settings=settings,
            model_server=served,
            backend=api,
            extra={service.name: service for service in extra},
        )


@contextmanager
def running(services: list[Service], log_dir: Path) -> Iterator[None]:
    """Start the services and wait until each is healthy (else exit with their log tails); stop them after."""
    try:
        with supervisor.running(services, log_dir, HEALTH_TIMEOUT_S):
            yield
    except supervisor.StartupError as error:
        print_log_tails(log_dir)
        raise SystemExit(str(error)) from error


class Feed:
    """Request bodies handed out in turn, shared by every user, so consecutive requests differ."""

    def __init__(self, bodies: list[bytes]) -> None:
        if not bodies:
            raise ValueError("a feed needs at least one body")
        self.bodies = bodies
        self.taken = 0

    def next(self) -> bytes:
        body = self.bodies[self.taken % len(self.bodies)]
        self.taken += 1
        return body


def prediction_feed(drawings: list[str]) -> Feed:
    return Feed([json.dumps({"inputs": drawing}).encode() for drawing in drawings])


def save_feed(labelled: list[tuple[str, str]]) -> Feed:
    return Feed([json.dumps({"image": drawing, "category": category}).encode() for category, drawing in labelled])


@dataclass
class Tally:
    """What the simulated users of one event loop saw."""

    read_versions: bool = False  # parse every prediction for its model_version (costs generator CPU)
    prediction_s: list[float] = field(default_factory=list)  # latency of each successful prediction
    save_s: list[float] = field(default_factory=list)  # latency of each successful save
    saved: list[tuple[str, bytes]] = field(default_factory=list)  # (filename the backend returned, request body)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (perf_counter time, what failed)
    versions: Counter = field(default_factory=Counter)  # model_version -> answers
    first_seen: dict[str, float] = field(default_factory=dict)  # model_version -> perf_counter time
    last_seen: dict[str, float] = field(default_factory=dict)
    latest_version: str | None = None  # of the most recent answer

    @property
    def errors(self) -> int:
        return len(self.failures)

    def failure_kinds(self) -> Counter:
        return Counter(kind for _, kind in self.failures)

    def _seen(self, version: str, at: float) -> None:
        self.versions[version] += 1
        self.first_seen.setdefault(version, at)
        self.last_seen[version] = at
        self.latest_version = version

    async def _post(self, client: aiohttp.ClientSession, url: str, body: bytes, what: str) -> bytes | None:
        """The answer's body when it is a 200, else None with the failure recorded."""
        try:
            async with client.post(url, data=body, headers=JSON_HEADERS) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            self.failures.append((time.perf_counter(), f"{what}: {type(error).__name__}"))
            return None
        if status != 200:
            self.failures.append((time.perf_counter(), f"{what}: HTTP {status}"))
            return None
        return payload

    async def predict(self, client: aiohttp.ClientSession, url: str, body: bytes) -> None:
        started = time.perf_counter()
        payload = await self._post(client, url, body, "predict")
        if payload is None:
            return
        finished = time.perf_counter()
        self.prediction_s.append(finished - started)
        if self.read_versions:
            self._seen(json.loads(payload)["model_version"], finished)

    async def save(self, client: aiohttp.ClientSession, url: str, body: bytes) -> None:
        started = time.perf_counter()
        payload = await self._post(client, url, body, "save")
        if payload is not None:
            self.save_s.append(time.perf_counter() - started)
            self.saved.append((json.loads(payload)["filename"], body))


async def draw_one(
    client: aiohttp.ClientSession,
    urls: Endpoints,
    predictions: Feed,
    saves: Feed,
    tally: Tally,
    seconds: float,
    interval: float,
    stop: asyncio.Event | None = None,
) -> None:
    """One user drawing: a prediction every `interval` for `seconds` (or until `stop` is set), then the save
    of a labelled drawing.

    Constant pacing: each prediction starts `interval` after the previous one started, or as soon as it
    is answered when that took longer, so a slow backend lowers the achieved rate rather than piling up.
    """
    ends = time.perf_counter() + seconds
    while (started := time.perf_counter()) < ends and not (stop and stop.is_set()):
        await tally.predict(client, urls.predict_url, predictions.next())
        await asyncio.sleep(max(0.0, started + interval - time.perf_counter()))
    await tally.save(client, urls.save_url, saves.next())


def stored_files(img_root: Path) -> tuple[set[str], int]:
    """Finished PNGs under IMG_DATA_LOCATION as '<category>/<name>', and the count of any other files."""
    pngs, others = set(), 0
    for path in Path(img_root).rglob("*") if Path(img_root).is_dir() else []:
        if not path.is_file():
            continue
        if path.suffix == ".png" and not path.name.startswith("."):
            pngs.add(path.relative_to(img_root).as_posix())
        else:
            others += 1
    return pngs, others
