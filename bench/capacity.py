"""Capacity on paper, from measurements: what one backend plus one model-server replica hold, what each
puts on the shared parts (model registry, PostgreSQL run store, drawings volume), and what 10x and 100x
today's held users need.

Run: .venv/bin/python bench/capacity.py [--users 50 100 200 300 400] [--window 20] [--json out.json]
Quick check: .venv/bin/python bench/capacity.py --users 5 10 --duration 5 --window 10 --peak-seconds 3 \\
    --probe-seconds 2 --strace-saves 5

Everything runs in a temporary folder on free 127.0.0.1 ports, in a fresh PostgreSQL database created
from --postgres-url (default TEST_POSTGRES_URL, else postgres@127.0.0.1:5432/test) and dropped at the end:

- a real `mlflow server` (SQLite store, one worker) as the registry, with the bundled model (or
  --checkpoint) registered at @production;
- the project's model server (`doodle serve-model`, polling the alias) and the backend, as bench/load.py
  starts them; the stock `mlflow models serve` of the same model as the baseline; the pipeline viewer
  (`doodle dashboard`) and an idle pipeline watcher (`doodle pipeline watch`, MIN_NEW_IMAGES so high that
  it never runs the pipeline), both on the fresh database, whose `pipeline_runs` holds 20 runs;
- counting proxies on loopback ports: the model server reaches the registry through one, the backend,
  viewer and watcher through another (HTTP requests counted per method and path); the viewer and the
  watcher each reach PostgreSQL through their own (statements counted from the wire protocol, simple
  queries and executions of parsed ones, named by their first words; SSL is off on those connections
  so the bytes can be read).

Then, in order:

1. window A (--window s): nothing but the services' own background work, the watcher checking every
   --watch-interval s; window B (--window s): also one viewer page, GET /pipeline_runs every 5 s as the
   page's script does. Registry requests per second per model-server replica are counted over A+B;
   PostgreSQL statements per second per client by its proxy, cross-checked with pg_stat_database
   (transactions, rows returned or fetched, sessions) of the fresh database per window, read 11 s
   after the last activity (PostgreSQL 15 reports a busy backend's counters up to 10 s late).
2. bench/load.py's stepping (same flags, same table): users held at p99 < --p99-ms with zero errors and
   the achieved request rates; per step the CPU of the backend's and model server's process groups
   (/proc) and, with inotify on the drawings folder and its category folders, the files created,
   closed after writing, renamed into place and deleted, and the bytes of each file renamed into place.
   The category folders are made before the steps (a folder is made once per category, ever, and a
   file saved in a folder not yet watched would be missed). inotify sees every change in those
   folders whatever process makes it and costs the servers nothing; it does not see fsync, so:
3. --strace-saves saves, one at a time, with `strace -f -c` attached to the backend (when strace is
   installed and allowed): fsync, rename, mkdir, openat, flock and unlink calls per save.
4. Peak throughput, closed loop at --peak-concurrency clients (bench/predict.py's measurement): stock
   `mlflow models serve` directly (the baseline) and the backend; their ratio.
5. Ceilings of the shared parts on this machine, --probe-seconds each: the registry answering the
   request the model server polls with (--probe-concurrency clients, no proxy), PostgreSQL under
   `pgbench -S` (select-only, 4 clients; skipped without pgbench), the drawings volume under the
   backend's own `save_drawing` (folder lock, temp file, fsync, rename) from 4 threads.

It prints load.py's step table, the measured figures, then a markdown table of what 10x and 100x the
held users need (replicas, cores, registry polls/s, PostgreSQL statements/s, volume writes/s), the shared
part that gives out first and the assumptions behind it. The machine's load average is printed before
and after: other work on the machine lowers what one replica holds here. Every service is stopped and
the database dropped at the end, whatever happens; exits 1 if the saved PNGs on disk do not match the
saves. Takes about 5 minutes with the defaults.
"""

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import logging
import math
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import psycopg
from common import (
    HOST,
    JSON_HEADERS,
    REQUEST_TIMEOUT_S,
    ServingStack,
    exit_on_sigterm,
    free_ports,
    load_drawings,
    load_labelled_drawings,
    none_if_nan,
    open_clients,
    prediction_feed,
    running,
    save_feed,
    serving_stack,
    stored_files,
)
from load import StepResult, add_step_arguments, check_step_arguments, largest_held, load_test
from load import print_report as print_steps
from predict import make_targets, measure
from sqlalchemy.engine import URL, make_url

from doodle.categories import normalize_category
from doodle.config import Settings, settings_under
from doodle.drawings import save_drawing
from doodle.model.registry import bundled_checkpoint
from doodle.pipeline import runs
from doodle.pipeline.stages import STAGES, Status
from doodle.stack.catalogue import Service, dashboard, mlflow_server, pipeline_watcher
from doodle.stack.stock import stock_model_server

logger = logging.getLogger("bench.capacity")

PG_FLUSH_S = 11.0  # PostgreSQL 15 reports a backend's counters at most once a second, else after 10 s idle
PAGE_POLL_S = 5.0  # the viewer page's POLL_MS: it asks for /pipeline_runs every 5 s
RUNS_IN_STORE = 20  # rows the viewer reads on each poll
PROBE_THREADS = 4  # writer threads of the volume probe, pgbench clients of the PostgreSQL probe
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STRACED = "fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,openat,flock,unlink,unlinkat"
STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")
PGBENCH_TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")


# --- counting what clients ask of a shared service ---------------------------------------------------------


class HttpRequests:
    """Reads a client's side of an HTTP/1.1 connection: one label "METHOD /path" per request."""

    def __init__(self) -> None:
        self.buffer = b""
        self.body_left = 0
        self.targets: dict[str, str] = {}  # label -> one full request target seen (query string included)

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        labels = []
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer, self.body_left = self.buffer[taken:], self.body_left - taken
                if self.body_left:
                    return labels
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return labels
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
            request_line, *headers = head.split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            label = f"{method} {target.split('?', 1)[0]}"
            self.targets.setdefault(label, target)
            labels.append(label)
            for header in headers:
                name, _, value = header.partition(":")
                if name.strip().lower() == "content-length":
                    self.body_left = int(value)
                elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                    raise ValueError("chunked request bodies are not counted")


def statement_label(kind: str, sql: bytes) -> str:
    """'Q SELECT 1', 'E SELECT pg_catalog.pg_class.relname': the kind and the statement's first words."""
    words = sql.split(b"\0", 1)[0].decode(errors="replace").split()
    return " ".join([kind, *words[:3]])


class PostgresStatements:
    """Reads a client's side of a PostgreSQL (protocol 3) connection: one label per statement, a simple query
    ('Q ...') or an execution of a parsed one ('E ...', named after the last Parse). Until the startup
    message, messages have no type byte and SSL/GSS negotiation requests may come first (refused by the
    server when the client disables SSL)."""

    NEGOTIATIONS = {80877102, 80877103, 80877104}  # cancel, SSL and GSS encryption requests

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False
        self.parsed = b""  # the SQL of the last Parse message

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        labels = []
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return labels
                length, code = struct.unpack("!ii", self.buffer[:8])
                if len(self.buffer) < length:
                    return labels
                self.buffer = self.buffer[length:]
                self.started = code not in self.NEGOTIATIONS
                continue
            if len(self.buffer) < 5:
                return labels
            kind, length = self.buffer[:1], struct.unpack("!i", self.buffer[1:5])[0]
            if len(self.buffer) < 1 + length:
                return labels
            payload, self.buffer = self.buffer[5 : 1 + length], self.buffer[1 + length :]
            if kind == b"Q":
                labels.append(statement_label("Q", payload))
            elif kind == b"P":  # statement name, then the SQL
                self.parsed = payload.split(b"\0", 1)[1]
            elif kind == b"E":
                labels.append(statement_label("E", self.parsed))


class CountingProxy:
    """A TCP forwarder from a free loopback port to `upstream`, in its own thread and event loop, that feeds
    each client's bytes to a fresh `reader()` and counts the labels it returns."""

    def __init__(self, name: str, upstream: tuple[str, int], reader: Callable[[], HttpRequests | PostgresStatements]):
        self.name, self.upstream, self.reader = name, upstream, reader
        self.port = 0
        self.counts: Counter = Counter()
        self.targets: dict[str, str] = {}
        self.unreadable = 0  # connections whose bytes stopped making sense (then only forwarded)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name=f"proxy-{name}", daemon=True)

    def start(self) -> "CountingProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"proxy {self.name} did not start")
        logger.info("counting proxy %s: port %d -> %s:%d", self.name, self.port, *self.upstream)
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.counts)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        reader = self.reader()

        def count(data: bytes) -> None:
            nonlocal reader
            if reader is None:
                return
            try:
                labels = reader.feed(data)
            except (ValueError, struct.error, UnicodeDecodeError):
                logger.warning("proxy %s: unreadable client bytes, forwarding without counting", self.name)
                self.unreadable += 1
                reader = None
                return
            with self._lock:
                self.counts.update(labels)
                for label, target in getattr(reader, "targets", {}).items():
                    self.targets.setdefault(label, target)

        await asyncio.gather(
            self._pump(client_reader, upstream_writer, count),
            self._pump(upstream_reader, client_writer, None),
        )

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: Callable[[bytes], None] | None
    ) -> None:
        try:
            while data := await source.read(65536):
                if count:
                    count(data)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()


# --- CPU of a service, writes on the drawings folder -------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the process group (each service has its own)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on: pgrp is [2], utime [11]
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_Q_OVERFLOW, IN_ISDIR = 0x100, 0x200, 0x4000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
WATCHED = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len, then the name
FILE_EVENTS = {
    IN_CREATE: "files created",
    IN_MODIFY: "modified (events coalesce)",
    IN_CLOSE_WRITE: "closed after writing",
    IN_MOVED_FROM: "renamed away",
    IN_MOVED_TO: "renamed into place",
    IN_DELETE: "deleted",
}


class FolderWrites:
    """Counts, with inotify, the changes to the files of a folder and of every folder created under it (a
    new folder is watched as soon as its creation is read; files already in it by then count as missed)."""

    def __init__(self, root: Path) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.folders: dict[int, Path] = {}
        self.counts: Counter = Counter()
        self.bytes = 0  # sizes of the files renamed into place
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch(Path(root), new=False)
        self._thread = threading.Thread(target=self._read, name="inotify", daemon=True)
        self._thread.start()

    def _watch(self, folder: Path, new: bool) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(folder), WATCHED)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {folder}")
        self.folders[wd] = folder
        for entry in folder.iterdir():
            if entry.is_dir():
                self._watch(entry, new)
            elif new:
                self.counts["missed (in a folder before it was watched)"] += 1

    def snapshot(self) -> tuple[Counter, int]:
        with self._lock:
            return Counter(self.counts), self.bytes

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.fd)

    def _read(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.2)[0]:
                continue
            data = os.read(self.fd, 1 << 16)
            offset = 0
            while offset < len(data):
                wd, mask, _, length = EVENT.unpack_from(data, offset)
                name = os.fsdecode(data[offset + EVENT.size : offset + EVENT.size + length].rstrip(b"\0"))
                offset += EVENT.size + length
                with self._lock:
                    self._event(wd, mask, name)

    def _event(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.counts["EVENTS LOST (queue overflow)"] += 1
            return
        folder = self.folders.get(wd)
        if folder is None:
            return
        if mask & IN_ISDIR:
            if mask & IN_CREATE:
                self.counts["folders created"] += 1
                self._watch(folder / name, new=True)
            return
        for flag, kind in FILE_EVENTS.items():
            if mask & flag:
                self.counts[kind] += 1
        if mask & IN_MOVED_TO:
            try:
                self.bytes += (folder / name).stat().st_size
            except FileNotFoundError:
                self.counts["gone before its size was read"] += 1


@dataclass
class StepLoad:
    """What one load step cost the servers and the drawings folder."""

    users: int
    seconds: float
    backend_cores: float  # CPU seconds of the backend's process group / wall seconds
    model_server_cores: float
    saves: int  # new PNGs on disk: the successful saves (load.py checks they match)
    writes: dict[str, int]  # inotify counts during the step
    bytes: int


class StepMeter:
    """load.py's `around_step`: CPU of the two servers and writes on the drawings folder, per step."""

    def __init__(self, stack: ServingStack, folder: FolderWrites) -> None:
        self.pgids = {"backend": stack.backend.process.pid, "model_server": stack.model_server.process.pid}
        self.img_root = Path(stack.settings.img_data_location)
        self.folder = folder
        self.steps: list[StepLoad] = []

    @contextmanager
    def __call__(self, users: int) -> Iterator[None]:
        cpu = {name: group_cpu_seconds(pgid) for name, pgid in self.pgids.items()}
        writes, written = self.folder.snapshot()
        pngs, started = len(stored_files(self.img_root)[0]), time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        cores = {name: (group_cpu_seconds(pgid) - cpu[name]) / seconds for name, pgid in self.pgids.items()}
        time.sleep(0.3)  # inotify events of the last saves reach the reader
        writes_after, written_after = self.folder.snapshot()
        self.steps.append(
            StepLoad(
                users=users,
                seconds=seconds,
                backend_cores=cores["backend"],
                model_server_cores=cores["model_server"],
                saves=len(stored_files(self.img_root)[0]) - pngs,
                writes=dict(writes_after - writes),
                bytes=written_after - written,
            )
        )


# --- PostgreSQL: a fresh database, its counters ------------------------------------------------------------


def libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[URL]:
    """Create a database next to `admin_url`'s (same server and user), yield its URL, drop it after."""
    admin = make_url(admin_url)
    name = f"doodle_capacity_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(admin), autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    logger.info("database %s created on %s:%s", name, admin.host, admin.port)
    try:
        yield admin.set(database=name)
    finally:
        with psycopg.connect(libpq_url(admin), autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        logger.info("database %s dropped", name)


PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "sessions")


def database_counters(admin_url: str, database: str) -> dict[str, int]:
    """pg_stat_database's cumulative counters of `database`, read from the admin database (so the read
    itself is not counted)."""
    query = f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database WHERE datname = %s"
    with psycopg.connect(libpq_url(make_url(admin_url)), autocommit=True, connect_timeout=5) as connection:
        row = connection.execute(query, (database,)).fetchone()
    return dict(zip(PG_COUNTERS, row, strict=True))


def fill_run_store(url: URL) -> None:
    """The table and RUNS_IN_STORE finished runs, so each viewer poll reads real rows (one insert and one
    update each: too few changes to wake autovacuum during the windows)."""
    engine = runs.connect(url.render_as_string(hide_password=False))
    runs.init_db(engine)
    for _ in range(RUNS_IN_STORE):
        runs.mark_from(engine, runs.create_run(engine), STAGES[0], Status.COMPLETE)
    engine.dispose()


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class Window:
    """Counts over one measurement window."""

    name: str
    seconds: float
    page_polls: int
    page_errors: int
    registry: dict[str, dict[str, int]]  # proxy name -> label -> requests
    statements: dict[str, dict[str, int]]  # proxy name -> label -> statements
    pg: dict[str, int]  # pg_stat_database deltas of the fresh database


@dataclass
class Probe:
    name: str
    ceiling: float | None  # per second; None: not measured
    unit: str
    how: str


@dataclass
class Measured:
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    windows: list[Window] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    step_loads: list[StepLoad] = field(default_factory=list)
    registry_under_load: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    writes_total: dict[str, int] = field(default_factory=dict)
    bytes_total: int = 0
    syscalls_per_save: dict[str, list[float]] = field(default_factory=dict)  # name -> [calls, errors] per save
    strace_note: str = ""
    peak: dict[str, float] = field(default_factory=dict)  # target -> req/s
    probes: list[Probe] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser, users=[50, 100, 200, 300, 400])
    parser.add_argument("--checkpoint", type=Path, default=None, help="defaults to the bundled model")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each quiet measurement window")
    parser.add_argument("--watch-interval", type=float, default=5.0, help="the idle watcher's seconds between checks")
    parser.add_argument("--strace-saves", type=int, default=20, help="saves traced with strace; 0 skips it")
    parser.add_argument("--peak-concurrency", type=int, default=32, help="clients of the closed-loop peak")
    parser.add_argument("--peak-seconds", type=float, default=8.0, help="measured seconds per peak target")
    parser.add_argument("--probe-seconds", type=float, default=5.0, help="seconds of each ceiling probe")
    parser.add_argument("--probe-concurrency", type=int, default=8, help="clients of the registry probe")
    parser.add_argument("--viewer-pages", type=int, default=5, help="viewer pages open at any scale (assumed)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a database to connect to while creating and dropping the fresh one",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    args.url = None  # load.py's stepping: the self-started stack
    check_step_arguments(parser, args)
    if args.window < 2 * PAGE_POLL_S or args.peak_seconds <= 0 or args.probe_seconds < 1:
        parser.error(f"--window must be >= {2 * PAGE_POLL_S:g}, --peak-seconds > 0, --probe-seconds >= 1")
    return args


def proxied(url: URL, proxy: CountingProxy) -> str:
    """`url` through the proxy, SSL off so the proxy can read the statements."""
    through = url.set(host=HOST, port=proxy.port).update_query_dict({"sslmode": "disable"})
    return through.render_as_string(hide_password=False)


async def poll_page(viewer_url: str, seconds: float) -> tuple[int, int]:
    """One open viewer page: GET /pipeline_runs, then the next 5 s after the answer (the page's setTimeout)."""
    polls = errors = 0
    ends = time.perf_counter() + seconds - PAGE_POLL_S + 0.5  # the last poll's statements land in the window
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PAGE_POLL_S)) as client:
        while time.perf_counter() < ends:
            polls += 1
            try:
                async with client.get(f"{viewer_url}/pipeline_runs") as response:
                    body = await response.json()
                    if response.status != 200 or len(body) != RUNS_IN_STORE:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            await asyncio.sleep(PAGE_POLL_S)
    return polls, errors


def measure_window(
    name: str,
    seconds: float,
    proxies: list[CountingProxy],
    admin_url: str,
    database: str,
    viewer_url: str | None,
    settle_s: float,
) -> Window:
    """Counts of `seconds` with nothing but the services' own work, or one viewer page polling
    (`viewer_url`); pg_stat_database is read again `settle_s` after the window, once the last polls'
    counters have reached it (the proxies' counts stop at the window's end)."""
    counts = {proxy.name: proxy.snapshot() for proxy in proxies}
    pg = database_counters(admin_url, database)
    started = time.perf_counter()
    if viewer_url:
        polls, errors = asyncio.run(poll_page(viewer_url, seconds))
        time.sleep(max(0.0, started + seconds - time.perf_counter()))
    else:
        polls = errors = 0
        time.sleep(seconds)
    elapsed = time.perf_counter() - started
    deltas = {proxy.name: dict(proxy.snapshot() - counts[proxy.name]) for proxy in proxies}
    time.sleep(settle_s)
    pg_after = database_counters(admin_url, database)
    window = Window(
        name=name,
        seconds=elapsed,
        page_polls=polls,
        page_errors=errors,
        registry={n: c for n, c in deltas.items() if n.startswith("registry")},
        statements={n: c for n, c in deltas.items() if n.startswith("pg")},
        pg={key: pg_after[key] - pg[key] for key in PG_COUNTERS},
    )
    logger.info("window %s: %.1f s, %d page polls, %s, %s", name, elapsed, polls, window.registry, window.statements)
    return window


async def traced_saves(stack: ServingStack, count: int, saves_feed) -> tuple[dict[str, list[float]], str]:
    """`count` saves one after another with strace counting the backend's file calls; per save: [calls, errors]."""
    if count == 0:
        return {}, "skipped (--strace-saves 0)"
    if not shutil.which("strace"):
        return {}, "skipped: strace is not installed"
    out = Path(stack.settings.log_dir) / "strace-saves.txt"
    command = ["strace", "-f", "-c", "-e", f"trace={STRACED}", "-p", str(stack.backend.process.pid), "-o", str(out)]
    tracer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.sleep(1.5)  # attached to every thread
    if tracer.poll() is not None:
        return {}, f"skipped: strace could not attach ({tracer.stderr.read().decode(errors='replace').strip()[:200]})"
    ok = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as client:
            for _ in range(count):
                async with client.post(stack.save_url, data=saves_feed.next(), headers=JSON_HEADERS) as response:
                    await response.read()
                    ok += response.status == 200
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    calls = {}
    for line in out.read_text().splitlines():
        if (found := STRACE_LINE.match(line)) and found[3] != "total":
            calls[found[3]] = [int(found[1]) / max(ok, 1), int(found[2] or 0) / max(ok, 1)]
    return calls, f"{ok} of {count} saves answered 200 while traced"


async def peak_throughput(stack: ServingStack, direct_url: str, drawings: list[str], args) -> dict[str, float]:
    """bench/predict.py's closed loop: the stock server directly, then the backend, back to back."""
    found, offset = {}, 0
    for target in make_targets(direct_url, stack.predict_url, drawings):
        async with AsyncExitStack() as sessions:
            clients = [await sessions.enter_async_context(c) for c in open_clients(args.peak_concurrency)]
            warmup = await measure(clients, target, 1.0, 10**9, offset)
            result = await measure(clients, target, args.peak_seconds, 10**9, offset + warmup.requests)
        offset += warmup.requests + result.requests
        if result.errors:
            logger.warning("peak %s: %d errors", target.name, result.errors)
        found[target.name] = result.throughput
        logger.info("peak %s x%d: %.1f req/s", target.name, args.peak_concurrency, result.throughput)
    return found


async def registry_ceiling(url: str, seconds: float, concurrency: int) -> float:
    """GETs of `url` back to back from `concurrency` clients; successful answers per second."""
    answered = 0
    stop_at = time.perf_counter() + seconds

    async def client_loop(client: aiohttp.ClientSession) -> None:
        nonlocal answered
        while time.perf_counter() < stop_at:
            async with client.get(url) as response:
                await response.read()
                answered += response.status == 200

    started = time.perf_counter()
    async with AsyncExitStack() as sessions:
        clients = [await sessions.enter_async_context(c) for c in open_clients(concurrency)]
        await asyncio.gather(*(client_loop(client) for client in clients))
    return answered / (time.perf_counter() - started)


def postgres_ceiling(url: URL, seconds: float) -> float | None:
    """`pgbench -S` (one primary-key SELECT per transaction) on the fresh database: statements per second."""
    if not shutil.which("pgbench"):
        return None
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    where = ["-h", url.host or HOST, "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", *where, url.database], env=env, check=True, capture_output=True)
    bench = ["pgbench", "-n", "-S", "-c", str(PROBE_THREADS), "-j", "2", "-T", str(math.ceil(seconds))]
    done = subprocess.run([*bench, *where, url.database], env=env, check=True, capture_output=True, text=True)
    found = PGBENCH_TPS.search(done.stdout)
    return float(found[1]) if found else None


def volume_ceiling(folder: Path, size: int, seconds: float) -> float:
    """The backend's own save (`save_drawing`: shared folder lock, temp file, fsync, rename) of `size` bytes,
    back to back from PROBE_THREADS threads, each in its own category under `folder`: saves per second."""
    written = [0] * PROBE_THREADS
    stop_at = time.perf_counter() + seconds

    def writer(number: int) -> None:
        while time.perf_counter() < stop_at:
            save_drawing(folder, f"probe{number}", os.urandom(size))
            written[number] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(PROBE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = sum(written) / (time.perf_counter() - started)
    shutil.rmtree(folder, ignore_errors=True)
    return rate


def run(args: argparse.Namespace, checkpoint: Path, root: Path, measured: Measured) -> None:
    drawings = load_drawings(args.data, args.images)
    predictions = prediction_feed(drawings)
    saves = save_feed(load_labelled_drawings(args.data, sum(args.users) + args.strace_saves, seed=1))
    base = settings_under(root)
    mlflow_port, stock_port, viewer_port = free_ports(3)
    registry = mlflow_server(base, HOST, mlflow_port)
    with running([registry], base.log_dir), fresh_database(args.postgres_url) as database:
        fill_run_store(database)
        proxies = [
            CountingProxy("registry:model-server", (HOST, mlflow_port), HttpRequests).start(),
            CountingProxy("registry:others", (HOST, mlflow_port), HttpRequests).start(),
            CountingProxy("pg:viewer", (database.host or HOST, database.port or 5432), PostgresStatements).start(),
            CountingProxy("pg:watcher", (database.host or HOST, database.port or 5432), PostgresStatements).start(),
        ]
        by_name = {proxy.name: proxy for proxy in proxies}

        def others(settings: Settings) -> list[Service]:
            direct = settings.model_copy(update={"mlflow_tracking_uri": f"http://{HOST}:{mlflow_port}"})
            viewer = settings.model_copy(update={"database_url": proxied(database, by_name["pg:viewer"])})
            idle = {"database_url": proxied(database, by_name["pg:watcher"]), "min_new_images": 10**9}
            return [
                stock_model_server(direct, HOST, stock_port),
                dashboard(viewer, HOST, viewer_port),
                pipeline_watcher(settings.model_copy(update=idle), args.watch_interval),
            ]

        try:
            with serving_stack(
                root,
                checkpoint,
                model_server_overrides={
                    "mlflow_tracking_uri": f"http://{HOST}:{by_name['registry:model-server'].port}"
                },
                extra_services=others,
                mlflow_tracking_uri=f"http://{HOST}:{by_name['registry:others'].port}",
            ) as stack:
                feeds = (drawings, predictions, saves)
                measure_phases(stack, f"http://{HOST}:{mlflow_port}", args, proxies, database, feeds, measured)
        finally:
            for proxy in proxies:
                proxy.stop()


def measure_phases(
    stack: ServingStack,
    registry_url: str,
    args: argparse.Namespace,
    proxies: list[CountingProxy],
    database: URL,
    feeds: tuple,
    measured: Measured,
) -> None:
    """The windows, the load steps, the traced saves, the peak and the ceilings, in that order."""
    drawings, predictions, saves = feeds
    categories = sorted(path.stem for path in args.data.glob("*.npy"))
    viewer_url = stack.extra["pipeline-viewer"].url
    direct_url = stack.extra["stock-model-server"].url
    time.sleep(PG_FLUSH_S)  # the start-up health checks' counters reach pg_stat_database
    for name, page, settle in (
        ("A: services alone", None, 0.0),
        ("B: one viewer page polling", viewer_url, PG_FLUSH_S),
    ):
        window = measure_window(name, args.window, proxies, args.postgres_url, database.database, page, settle)
        measured.windows.append(window)

    img_root = Path(stack.settings.img_data_location)
    for category in categories:  # once per category ever: not part of what a save costs from then on
        (img_root / normalize_category(category)).mkdir(parents=True, exist_ok=True)
    folder = FolderWrites(img_root)
    meter = StepMeter(stack, folder)
    registry_proxy = proxies[0]
    before, started = registry_proxy.snapshot(), time.perf_counter()
    try:
        measured.steps = asyncio.run(load_test(stack, predictions, saves, args, img_root, around_step=meter))
    finally:
        measured.load_seconds = time.perf_counter() - started
        measured.registry_under_load = dict(registry_proxy.snapshot() - before)
        time.sleep(0.3)
        writes, measured.bytes_total = folder.snapshot()
        measured.writes_total = dict(writes)
        folder.close()
    measured.step_loads = meter.steps

    measured.syscalls_per_save, measured.strace_note = asyncio.run(traced_saves(stack, args.strace_saves, saves))
    measured.peak = asyncio.run(peak_throughput(stack, direct_url, drawings, args))

    polled = registry_proxy.snapshot().most_common(1)
    label = polled[0][0] if polled else None
    if label and label.startswith("GET "):
        url = f"{registry_url}{registry_proxy.targets[label]}"
        rate = asyncio.run(registry_ceiling(url, args.probe_seconds, args.probe_concurrency))
        how = f"{label} from {args.probe_concurrency} clients, one mlflow server worker"
        measured.probes.append(Probe("registry", rate, "requests/s", how))
    else:
        measured.probes.append(Probe("registry", None, "requests/s", f"not probed (polled request: {label})"))
    pg_rate = postgres_ceiling(database, args.probe_seconds)
    how = f"pgbench -S, {PROBE_THREADS} clients" if pg_rate else "not probed: pgbench is not installed"
    measured.probes.append(Probe("postgresql", pg_rate, "statements/s", how))
    size = round(measured.bytes_total / max(1, measured.writes_total.get("renamed into place", 0))) or 300
    rate = volume_ceiling(img_root.parent / "volume-probe", size, args.probe_seconds)
    how = f"save_drawing of {size} B (lock, temp, fsync, rename), {PROBE_THREADS} threads, this machine's disk"
    measured.probes.append(Probe("volume", rate, "saves/s", how))
    for probe in measured.probes:
        logger.info("ceiling %s: %s %s (%s)", probe.name, probe.ceiling, probe.unit, probe.how)


# --- the report ----------------------------------------------------------------------------------------------


def per_second(windows: list[Window], kind: str, proxy: str) -> tuple[float, int, float]:
    """Requests or statements of one proxy per second over `windows`: (rate, count, seconds)."""
    count = sum(sum(getattr(w, kind).get(proxy, {}).values()) for w in windows)
    seconds = sum(w.seconds for w in windows)
    return count / seconds, count, seconds


@dataclass
class Figures:
    """What the projection is computed from, per pair (one backend + one model-server replica)."""

    held: int
    prediction_rate: float  # at the held step
    save_rate: float  # successful saves per second at the held step
    peak_prediction_rate: float  # the highest achieved over the steps
    pair_cores: float  # busy cores of backend + model server at the held step
    backend_cores: float
    model_server_cores: float
    polls_per_replica: float  # registry requests per second from one model server (windows A+B)
    others_registry: float  # from the backend, viewer and watcher together
    page_statements: float  # PostgreSQL statements per second from one viewer page (its proxy, window B)
    watcher_statements: float  # from the idle watcher (its proxy, windows A+B)
    per_save: dict[str, float]  # inotify counts per successful save
    bytes_per_save: float
    fsyncs_per_save: float | None  # strace
    fs_calls_per_save: float | None  # every traced call (STRACED), failed ones included


def figures(measured: Measured) -> Figures | None:
    held = largest_held(measured.steps)
    if held is None:
        return None
    step = next(r for r in measured.steps if r.users == held)
    load = next(s for s in measured.step_loads if s.users == held)
    saves = sum(s.saves for s in measured.step_loads)
    windows = measured.windows
    fsync = measured.syscalls_per_save.get("fsync")
    return Figures(
        held=held,
        prediction_rate=step.rate,
        save_rate=load.saves / load.seconds,
        peak_prediction_rate=max(r.rate for r in measured.steps),
        pair_cores=load.backend_cores + load.model_server_cores,
        backend_cores=load.backend_cores,
        model_server_cores=load.model_server_cores,
        polls_per_replica=per_second(windows, "registry", "registry:model-server")[0],
        others_registry=per_second(windows, "registry", "registry:others")[0],
        page_statements=per_second(windows[1:], "statements", "pg:viewer")[0],
        watcher_statements=per_second(windows, "statements", "pg:watcher")[0],
        per_save={kind: n / max(saves, 1) for kind, n in measured.writes_total.items()},
        bytes_per_save=measured.bytes_total / max(saves, 1),
        fsyncs_per_save=fsync[0] if fsync else None,
        fs_calls_per_save=sum(calls for calls, _ in measured.syscalls_per_save.values()) or None,
    )


def writes_per_save(f: Figures) -> float:
    """Volume writes of one save: files created, renamed into place and fsyncs (1 per file when not traced)."""
    created, renamed = f.per_save.get("files created", 0.0), f.per_save.get("renamed into place", 0.0)
    return created + renamed + (f.fsyncs_per_save if f.fsyncs_per_save is not None else created)


def projection(f: Figures, multiple: int, pages: int, cpus: int) -> dict[str, float]:
    users = f.held * multiple
    pairs = math.ceil(users / f.held)
    saves = users * f.save_rate / f.held
    return {
        "multiple": multiple,
        "users": users,
        "backend_replicas": pairs,
        "model_server_replicas": pairs,
        "cores_busy": pairs * f.pair_cores,
        "cores_provisioned": pairs * cpus,
        "registry_polls": pairs * f.polls_per_replica,
        "pg_statements": pages * f.page_statements + f.watcher_statements,
        "saves": saves,
        "volume_writes": saves * writes_per_save(f),
        "volume_calls": saves * f.fs_calls_per_save if f.fs_calls_per_save else math.nan,
        "volume_kb": saves * f.bytes_per_save / 1e3,
    }


def gives_out(f: Figures, probes: list[Probe], pages: int) -> list[tuple[str, float | None, str]]:
    """Per shared part: the users at which demand reaches the measured ceiling (None: never with users)."""
    ceiling = {probe.name: probe.ceiling for probe in probes}
    found = []
    if ceiling["registry"] and f.polls_per_replica:
        users = f.held * ceiling["registry"] / f.polls_per_replica
        found.append(("registry", users, f"{ceiling['registry']:.0f} polls/s = {users / f.held:.0f} model servers"))
    if ceiling["volume"] and f.save_rate:
        users = f.held * ceiling["volume"] / f.save_rate
        found.append(("drawings volume", users, f"{ceiling['volume']:.0f} saves/s (save_drawing)"))
    if ceiling["postgresql"]:
        demand = pages * f.page_statements + f.watcher_statements
        found.append(("PostgreSQL", None, f"{ceiling['postgresql']:.0f} statements/s vs {demand:.2f}: not per user"))
    return sorted(found, key=lambda item: math.inf if item[1] is None else item[1])


def print_measured(measured: Measured, f: Figures | None, args) -> None:
    print()
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) before {measured.load_before}")
    print(f"         after {measured.load_after}")
    for w in measured.windows:
        print(f"window {w.name}: {w.seconds:.1f} s, page polls {w.page_polls} ({w.page_errors} failed)")
        for name, counts in {**w.registry, **w.statements}.items():
            print(f"  {name:<22} {sum(counts.values()):>4}  {dict(counts)}")
        print(f"  pg_stat_database       {w.pg}")
    print(f"registry requests during the load steps ({measured.load_seconds:.0f} s): {measured.registry_under_load}")
    print()
    print("step  backend cores  model-server cores  saves  files created  renamed  bytes")
    for s in measured.step_loads:
        created, renamed = s.writes.get("files created", 0), s.writes.get("renamed into place", 0)
        row = (s.users, f"{s.backend_cores:.2f}", f"{s.model_server_cores:.2f}", s.saves, created, renamed, s.bytes)
        print("{:>4}  {:>13}  {:>18}  {:>5}  {:>13}  {:>7}  {:>5}".format(*row))
    print(f"drawings folder over all steps (inotify): {measured.writes_total}, {measured.bytes_total} bytes")
    calls = {
        name: f"{c:.2f}" + (f" ({e:.2f} failed)" if e else "") for name, (c, e) in measured.syscalls_per_save.items()
    }
    print(f"backend file calls per save (strace, {measured.strace_note}): {calls or '-'}")
    direct, backend = measured.peak.get("direct", math.nan), measured.peak.get("backend", math.nan)
    print()
    print(
        f"peak, closed loop at {args.peak_concurrency} clients: backend {backend:.1f} req/s, stock direct {direct:.1f}"
    )
    print(f"backend+model server / stock mlflow models serve direct: {backend / direct:.2f}x")
    for probe in measured.probes:
        value = f"{probe.ceiling:.0f} {probe.unit}" if probe.ceiling else "not measured"
        print(f"ceiling {probe.name:<10} {value:>20}  ({probe.how})")
    if f is None:
        print("\nno step held: nothing to project from (try smaller --users)")
        return
    print()
    print(f"one backend + one model server on this machine: {f.held} users held (p99 < {args.p99_ms:g} ms)")
    if f.held == max(args.users):
        print("  EVERY STEP HELD: the pair holds at least that many, the projection is pessimistic (raise --users)")
    print(f"  {f.prediction_rate:.1f} predictions/s + {f.save_rate:.2f} saves/s at the held step")
    print(f"  peak achieved over the steps {f.peak_prediction_rate:.1f} predictions/s")
    print(f"  busy cores at the held step: backend {f.backend_cores:.2f}, model server {f.model_server_cores:.2f}")
    print(f"  registry: {f.polls_per_replica:.2f} requests/s per model server, {f.others_registry:.2f} from the others")
    print(
        f"  PostgreSQL: {f.page_statements:.2f} statements/s per viewer page, {f.watcher_statements:.2f} idle watcher"
    )
    print(
        f"  volume per save: {f.per_save.get('files created', 0):.2f} files created, "
        f"{f.per_save.get('renamed into place', 0):.2f} renamed, {f.bytes_per_save:.0f} bytes, "
        f"fsync {f.fsyncs_per_save if f.fsyncs_per_save is not None else 'not traced'}"
    )


def print_projection(f: Figures, probes: list[Probe], args) -> list[dict[str, float]]:
    cpus = os.cpu_count() or 1
    rows = [projection(f, m, args.viewer_pages, cpus) for m in (1, 10, 100)]
    print()
    header = "| users | backend replicas | model-server replicas | cores (busy / provisioned) | registry polls/s "
    print(header + "| PostgreSQL statements/s | volume writes/s (saves/s, kB/s) | volume file-system calls/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        label = "today" if r["multiple"] == 1 else f"{r['multiple']:g}x"
        print(
            f"| {r['users']:g} ({label}) | {r['backend_replicas']} | {r['model_server_replicas']} "
            f"| {r['cores_busy']:.1f} / {r['cores_provisioned']} | {r['registry_polls']:.1f} "
            f"| {r['pg_statements']:.2f} | {r['volume_writes']:.1f} ({r['saves']:.1f}, {r['volume_kb']:.1f}) "
            f"| {r['volume_calls']:.0f} |"
        )
    print()
    limits = gives_out(f, probes, args.viewer_pages)
    for name, users, why in limits:
        at = f"at about {users:,.0f} users ({users / f.held:,.0f}x today)" if users else "does not grow with users"
        print(f"{name:<16} {at}: ceiling {why}")
    if limits and limits[0][1] is not None:
        print(f"gives out first: {limits[0][0]}")
    print()
    print("assumptions:")
    print(f"- each backend + model-server pair holds what this one held here ({f.held} users), replicas scale")
    print("  linearly and a load balancer spreads users (one keep-alive connection each) evenly;")
    print(f"- cores: busy = the pair's measured CPU at the held step; provisioned = {cpus} per pair as here, where")
    print("  the load generator shared the cores (and any other work on the machine: see the load average);")
    print("- registry: each model server polls as measured; backends, viewers and watchers as measured (0 when")
    print("  idle); the ceiling is one `mlflow server` worker on this machine answering the polled request;")
    print(f"- PostgreSQL: {args.viewer_pages} viewer pages open at any scale (--viewer-pages) polling every 5 s, one")
    print("  idle watcher (pipeline runs hold a lock: one at a time); not counted: the pipeline runs themselves")
    print("  and Prometheus scraping the viewer's /metrics; ceiling: pgbench select-only on this machine;")
    print(f"- volume: every user saves as at the held step ({f.save_rate / f.held:.4f} saves/s per user: one per")
    print("  drawing); writes/s = files created + renamed into place + fsyncs; file-system calls/s = every")
    print("  call strace counted (fsync, rename, mkdir, openat, flock, unlink), failed mkdirs included;")
    print("  ceiling: the backend's save_drawing on this machine's local disk (a network volume answers each")
    print("  of those calls more slowly: there the calls per save, not the bytes, set the limit).")
    return rows


def write_json(path: Path, measured: Measured, f: Figures | None, rows: list[dict[str, float]], args) -> None:
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("postgres_url", "data", "json", "checkpoint")},
        "checkpoint": (args.checkpoint or bundled_checkpoint()).name,
        "cpus": os.cpu_count(),
        "measured": json.loads(json.dumps(asdict(measured), default=str), parse_constant=lambda _: None),
        "figures": {k: none_if_nan(v) for k, v in asdict(f).items()} if f else None,
        "projection": rows,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("results written to %s", path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check while the stack starts
    args = parse_args()
    exit_on_sigterm()
    checkpoint = args.checkpoint or bundled_checkpoint()
    if not checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {checkpoint} (use --checkpoint PATH)")
    measured = Measured(load_before=os.getloadavg())
    logger.info("load average before: %s on %d cores", measured.load_before, os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="doodle-capacity-") as root:
        run(args, checkpoint, Path(root), measured)
    measured.load_after = os.getloadavg()
    logger.info("load average after: %s", measured.load_after)
    print_steps(measured.steps, args.p99_ms)
    found = figures(measured)
    print_measured(measured, found, args)
    rows = print_projection(found, measured.probes, args) if found else []
    if args.json:
        write_json(args.json, measured, found, rows, args)
    if any(r.files_match is False for r in measured.steps):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
