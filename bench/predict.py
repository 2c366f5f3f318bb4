"""Prediction throughput and latency: stock `mlflow models serve` alone vs the backend, the UI's path.

Run: .venv/bin/python bench/predict.py [--seconds 10] [--concurrency 1 8 32] [--checkpoint PATH] [--json out.json]

Everything runs in a temporary folder and on free 127.0.0.1 ports: a fresh SQLite MLflow store with the
bundled model (or --checkpoint) registered at @production; stock `mlflow models serve` of it (the
baseline); and the backend in front of the project's model server (`doodle serve-model`, what `make run`
serves). For each concurrency level, after a short warm-up, that many asyncio clients (each an aiohttp
session with one keep-alive connection) send requests for --seconds to (a) the stock server's
/invocations directly and (b) the backend's /invocations/, hop to the model server included. Each
request carries a different real Quick Draw drawing (base64 of its 784 bytes).

The table shows requests, errors (non-200 or no answer), throughput, p50/p99 latency of the successful
requests and the CPU the load generator itself used (100% = one core: on a 2-core machine, whatever it
uses the servers cannot). Then the backend/direct throughput ratio per level. Every service is stopped
at the end, whatever happens.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np
from common import (
    HOST,
    JSON_HEADERS,
    QUICKDRAW,
    REQUEST_TIMEOUT_S,
    exit_on_sigterm,
    free_ports,
    load_drawings,
    none_if_nan,
    open_clients,
    running,
)

from doodle.config import settings_under
from doodle.model.registry import bootstrap, bundled_checkpoint, configure_mlflow
from doodle.stack.catalogue import backend, model_server
from doodle.stack.stock import stock_model_server

logger = logging.getLogger("bench.predict")

ROW = "{:<8} {:>5} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}"  # the results table


@dataclass
class Target:
    name: str
    url: str
    bodies: list[bytes]  # ready-to-send JSON request bodies, one per drawing


@dataclass
class RunResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # successful requests per second of wall time
    p50_ms: float
    p99_ms: float
    client_cpu: float  # CPU time of this process / wall time: 1.0 is one full core


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration per target and level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    parser.add_argument("--checkpoint", type=Path, default=None, help="defaults to the bundled model")
    parser.add_argument("--data", type=Path, default=QUICKDRAW, help="folder of Quick Draw <category>.npy files")
    parser.add_argument("--images", type=int, default=4000, help="distinct drawings to cycle through")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if min(args.concurrency) < 1 or args.seconds <= 0 or args.warmup < 0 or args.images < 1:
        parser.error("concurrency and --images must be >= 1, --seconds > 0, --warmup >= 0")
    return args


@contextmanager
def running_stack(root: Path, checkpoint: Path) -> Iterator[tuple[str, str]]:
    """Register the model, start model server and backend; yields their invocation URLs, then stops both."""
    stock_port, model_port, backend_port = free_ports(3)
    settings = settings_under(root, mlflow_hosted_model_url=f"http://{HOST}:{model_port}/invocations")
    configure_mlflow(settings)
    version = bootstrap(settings.model_name, settings.model_alias, checkpoint)
    logger.info("registered %s@%s version %s from %s", settings.model_name, settings.model_alias, version, checkpoint)

    stock = stock_model_server(settings, HOST, stock_port)
    served = model_server(settings, HOST, model_port)
    api = backend(settings, HOST, backend_port)
    with running([stock, served, api], settings.log_dir):
        logger.info("stock %s, model server %s, backend port %d: up", stock.url, served.url, backend_port)
        yield stock.url, f"http://{HOST}:{backend_port}/invocations/"


def make_targets(direct_url: str, backend_url: str, drawings: list[str]) -> list[Target]:
    """The two request shapes: the model server takes a list of images, the backend takes one image."""
    return [
        Target("direct", direct_url, [json.dumps({"inputs": [d]}).encode() for d in drawings]),
        Target("backend", backend_url, [json.dumps({"inputs": d}).encode() for d in drawings]),
    ]


async def check_targets(client: aiohttp.ClientSession, targets: list[Target]) -> None:
    """One request each, to fail early and clearly if an answer does not look like a prediction."""
    for target in targets:
        async with client.post(target.url, data=target.bodies[0], headers=JSON_HEADERS) as response:
            if response.status != 200:
                raise SystemExit(f"{target.name} answered {response.status}: {(await response.text())[:300]}")
            body = await response.json()
        top = body["predictions"][0]["labels"][0] if target.name == "direct" else body["predictions"][0]
        logger.info("%s answers: top label %r for the first drawing", target.name, top)


async def client_loop(
    client: aiohttp.ClientSession,
    target: Target,
    ticket: Iterator[int],
    stop_at: float,
    max_requests: int,
    offset: int,
    latencies: list[float],
) -> int:
    """Send requests one after another until the deadline or the cap; returns the number of errors."""
    errors = 0
    for n in ticket:
        if n >= max_requests or time.perf_counter() >= stop_at:
            break
        body = target.bodies[(offset + n) % len(target.bodies)]
        started = time.perf_counter()
        try:
            async with client.post(target.url, data=body, headers=JSON_HEADERS) as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
    return errors


async def measure(
    clients: list[aiohttp.ClientSession], target: Target, seconds: float, max_requests: int, offset: int
) -> RunResult:
    """Run every client for `seconds`, starting at drawing `offset`; in-flight requests finish and count."""
    latencies: list[float] = []
    ticket = itertools.count()  # shared by the clients: every request takes the next drawing
    cpu_started, started = time.process_time(), time.perf_counter()
    stop_at = started + seconds
    errors = await asyncio.gather(
        *(client_loop(client, target, ticket, stop_at, max_requests, offset, latencies) for client in clients)
    )
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    ms = np.array(latencies) * 1e3
    return RunResult(
        target=target.name,
        concurrency=len(clients),
        requests=len(latencies) + sum(errors),
        errors=sum(errors),
        seconds=elapsed,
        throughput=len(latencies) / elapsed,
        p50_ms=float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        p99_ms=float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        client_cpu=cpu / elapsed,
    )


async def benchmark(targets: list[Target], args: argparse.Namespace) -> list[RunResult]:
    """Every concurrency level, direct then backend back to back so both see the same machine load."""
    results = []
    offset = 0  # drawings already sent: the next run continues from there
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as client:
        await check_targets(client, targets)
    for concurrency in args.concurrency:
        for target in targets:
            async with AsyncExitStack() as clients_stack:
                clients = [await clients_stack.enter_async_context(c) for c in open_clients(concurrency)]
                if args.warmup:  # also opens the connections the measurement then reuses
                    warmup = await measure(clients, target, args.warmup, args.max_requests, offset)
                    offset += warmup.requests
                result = await measure(clients, target, args.seconds, args.max_requests, offset)
            offset += result.requests
            logger.info("%s x%d: %.1f req/s", target.name, concurrency, result.throughput)
            results.append(result)
    return results


def ratios(results: list[RunResult]) -> dict[int, float]:
    """Backend throughput divided by direct throughput, per concurrency level."""
    throughput = {(r.target, r.concurrency): r.throughput for r in results}
    found = {}
    for concurrency in sorted({r.concurrency for r in results}):
        direct, backend = throughput[("direct", concurrency)], throughput[("backend", concurrency)]
        found[concurrency] = backend / direct if direct else float("nan")
    return found


def print_report(results: list[RunResult]) -> None:
    print()
    print(ROW.format("target", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms", "gen CPU"))
    for r in results:
        numbers = (f"{r.throughput:.1f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.client_cpu:.0%}")
        print(ROW.format(r.target, r.concurrency, r.requests, r.errors, *numbers))
    print()
    for concurrency, ratio in ratios(results).items():
        print(f"backend/direct throughput at concurrency {concurrency:>3}: {ratio:.2f}")


def write_json(path: Path, results: list[RunResult], args: argparse.Namespace, checkpoint: Path) -> None:
    report = {
        "config": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "checkpoint": checkpoint.name,
            "images": args.images,
            "cpus": os.cpu_count(),
        },
        "results": [{k: none_if_nan(v) for k, v in asdict(r).items()} for r in results],
        "backend_over_direct": {str(c): none_if_nan(ratio) for c, ratio in ratios(results).items()},
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("results written to %s", path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = parse_args()
    exit_on_sigterm()
    checkpoint = args.checkpoint or bundled_checkpoint()
    if not checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {checkpoint} (use --checkpoint PATH)")
    drawings = load_drawings(args.data, args.images)
    with tempfile.TemporaryDirectory(prefix="doodle-bench-") as root:
        with running_stack(Path(root), checkpoint) as (direct_url, backend_url):
            results = asyncio.run(benchmark(make_targets(direct_url, backend_url, drawings), args))
    print_report(results)
    if args.json:
        write_json(args.json, results, args, checkpoint)


if __name__ == "__main__":
    main()
