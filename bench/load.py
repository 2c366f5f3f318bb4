"""Drawing users against the backend, stepped up: how many users does the stack hold?

Run: .venv/bin/python bench/load.py [--users 10 25 50 100 150 200] [--duration 20] [--json out.json]
Quick check: .venv/bin/python bench/load.py --users 5 20 --duration 5
A running stack (e.g. behind a load balancer): .venv/bin/python bench/load.py --url http://127.0.0.1:8000

A Locust-like scenario without Locust. Everything runs in a temporary folder on free 127.0.0.1 ports: a
fresh SQLite MLflow store with the bundled model (or --checkpoint) at @production, the project's model
server (`doodle serve-model`) and the backend in front of it. Each step starts that many simulated users,
spread over --stagger seconds, each with its own aiohttp session (one keep-alive connection). A user
"draws": a prediction every --interval seconds for --duration seconds, each request a different real
Quick Draw drawing, then saves one drawing under its real category. A step ends when its last user is
done; the next starts after --pause seconds.

Per step: users, predictions and saves sent, errors (non-200 or no answer), the achieved prediction rate
(successful predictions / --duration, as each user draws that long) against the target (that rate if
every user kept its pace: about users / --interval), p50/p95/p99 prediction latency, save p99, and the
CPU the generator itself used (100% = one core: on a 2-core machine, whatever it uses the servers
cannot). A step "held" when its prediction p99 stayed under --p99-ms with zero errors; the largest such
user count is reported.

After each step the PNGs under IMG_DATA_LOCATION must be exactly the files the successful saves named,
one each, with no other file (e.g. a leftover temp file) beside them; the script exits 1 if not.
Both services are stopped at the end, whatever happens.

With --url the users target that backend (its /invocations/ and /save-image/) and nothing is started:
the model is whatever that stack serves, the saves are real and land in its drawings folder (where its
pipeline may consume them), and the on-disk check is skipped. Each user still opens its own keep-alive
connection, so a load balancer in front spreads users, not requests.
"""

import argparse
import asyncio
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, AsyncExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from common import (
    JSON_HEADERS,
    QUICKDRAW,
    REQUEST_TIMEOUT_S,
    Endpoints,
    Feed,
    Tally,
    draw_one,
    exit_on_sigterm,
    load_drawings,
    load_labelled_drawings,
    none_if_nan,
    open_clients,
    percentile_ms,
    prediction_feed,
    save_feed,
    serving_stack,
    stored_files,
)

from doodle.model.registry import bundled_checkpoint

logger = logging.getLogger("bench.load")

WARMUP_PREDICTIONS = 20  # unmeasured, before the first step: the model server's first calls are slow
ROW = "{:>5} {:>6} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7} {:>5} {:>5}"  # the results table


@dataclass
class StepResult:
    users: int
    predictions: int  # sent, answered or not
    saves: int  # sent, answered or not
    errors: int
    seconds: float  # wall time of the step
    target_rate: float  # successful predictions / --duration if every user kept its pace
    rate: float  # successful predictions / --duration
    p50_ms: float
    p95_ms: float
    p99_ms: float
    save_p99_ms: float
    client_cpu: float  # CPU time of this process / wall time: 1.0 is one full core
    held: bool  # p99 under the limit with zero errors
    files_match: bool | None  # the PNGs on disk are exactly those the successful saves named; None: not checked


def add_step_arguments(parser: argparse.ArgumentParser, users: list[int]) -> None:
    """The stepping's flags (users per step, pacing, the p99 limit, the drawings), shared with bench/capacity.py."""
    parser.add_argument("--users", type=int, nargs="+", default=users, help="users per step")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each user draws")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between a user's predictions")
    parser.add_argument("--stagger", type=float, default=1.0, help="user starts are spread over this many seconds")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between steps")
    parser.add_argument("--p99-ms", type=float, default=100.0, help="a step holds when its p99 stays under this")
    parser.add_argument("--data", type=Path, default=QUICKDRAW, help="folder of Quick Draw <category>.npy files")
    parser.add_argument("--images", type=int, default=20_000, help="distinct drawings to cycle through")


def check_step_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.users) < 1 or args.images < 1:
        parser.error("--users and --images must be >= 1")
    if args.duration <= 0 or args.interval <= 0 or args.stagger < 0 or args.pause < 0:
        parser.error("--duration and --interval must be > 0, --stagger and --pause >= 0")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser, users=[10, 25, 50, 100, 150, 200])
    parser.add_argument("--checkpoint", type=Path, default=None, help="defaults to the bundled model")
    parser.add_argument("--url", default=None, help="a running backend's base URL: start nothing, load it")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    check_step_arguments(parser, args)
    if args.url and args.checkpoint:
        parser.error("--checkpoint needs the self-started stack: a running stack (--url) serves its own model")
    if args.url and not args.url.startswith(("http://", "https://")):
        parser.error("--url must be an http:// or https:// URL")
    return args


async def warm_up(urls: Endpoints, predictions: Feed) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as client:
        for _ in range(WARMUP_PREDICTIONS):
            try:
                async with client.post(urls.predict_url, data=predictions.next(), headers=JSON_HEADERS) as response:
                    if response.status != 200:
                        raise SystemExit(f"backend answered {response.status}: {(await response.text())[:300]}")
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                raise SystemExit(f"no answer from {urls.predict_url}: {type(error).__name__} {error}") from error


async def run_step(urls: Endpoints, users: int, predictions: Feed, saves: Feed, args) -> tuple[Tally, float, float]:
    """Every user draws once; returns what they saw, the wall time and this process's CPU time."""
    tally = Tally()

    async def user(client: aiohttp.ClientSession, number: int) -> None:
        await asyncio.sleep(number * args.stagger / users)
        await draw_one(client, urls, predictions, saves, tally, args.duration, args.interval)

    cpu_started, started = time.process_time(), time.perf_counter()
    async with AsyncExitStack() as sessions:
        clients = [await sessions.enter_async_context(client) for client in open_clients(users)]
        await asyncio.gather(*(user(client, number) for number, client in enumerate(clients)))
    return tally, time.perf_counter() - started, time.process_time() - cpu_started


def files_match(img_root: Path | None, saved_names: list[str]) -> bool | None:
    """Exactly one finished PNG per successful save, and nothing else under IMG_DATA_LOCATION; None without
    a folder to check (a running stack's)."""
    if img_root is None:
        return None
    pngs, others = stored_files(img_root)
    if pngs != set(saved_names) or len(saved_names) != len(set(saved_names)) or others:
        logger.error(
            "files on disk differ: %d saves answered 200 (%d distinct names), %d PNGs, %d other files, "
            "%d named but missing, %d not named by any save",
            len(saved_names),
            len(set(saved_names)),
            len(pngs),
            others,
            len(set(saved_names) - pngs),
            len(pngs - set(saved_names)),
        )
        return False
    return True


def summarise(
    users: int, tally: Tally, seconds: float, cpu: float, saved_names: list[str], args, img_root: Path | None
) -> StepResult:
    failed = tally.failure_kinds()
    failed_predictions = sum(n for kind, n in failed.items() if kind.startswith("predict"))
    p99 = percentile_ms(tally.prediction_s, 99)
    return StepResult(
        users=users,
        predictions=len(tally.prediction_s) + failed_predictions,
        saves=len(tally.save_s) + tally.errors - failed_predictions,
        errors=tally.errors,
        seconds=seconds,
        target_rate=users * math.ceil(args.duration / args.interval) / args.duration,
        rate=len(tally.prediction_s) / args.duration,
        p50_ms=percentile_ms(tally.prediction_s, 50),
        p95_ms=percentile_ms(tally.prediction_s, 95),
        p99_ms=p99,
        save_p99_ms=percentile_ms(tally.save_s, 99),
        client_cpu=cpu / seconds,
        held=tally.errors == 0 and p99 < args.p99_ms,
        files_match=files_match(img_root, saved_names),
    )


async def load_test(
    urls: Endpoints,
    predictions: Feed,
    saves: Feed,
    args,
    img_root: Path | None,
    around_step: Callable[[int], AbstractContextManager[object]] | None = None,
) -> list[StepResult]:
    """Warm up, then every step in turn; `img_root` None skips the on-disk check, `around_step(users)` wraps
    each step (bench/capacity.py measures the servers' CPU and the drawings folder's writes with it)."""
    await warm_up(urls, predictions)
    results, saved_names = [], []
    for number, users in enumerate(args.users):
        if number:
            await asyncio.sleep(args.pause)
        with around_step(users) if around_step else nullcontext():
            tally, seconds, cpu = await run_step(urls, users, predictions, saves, args)
        saved_names += [name for name, _ in tally.saved]
        result = summarise(users, tally, seconds, cpu, saved_names, args, img_root)
        if tally.errors:
            logger.warning("%d users: failures %s", users, dict(tally.failure_kinds()))
        logger.info(
            "%d users: %.1f/%.1f predictions/s, p99 %.1f ms", users, result.rate, result.target_rate, result.p99_ms
        )
        results.append(result)
    return results


def largest_held(results: list[StepResult]) -> int | None:
    return max((r.users for r in results if r.held), default=None)


def print_report(results: list[StepResult], p99_limit_ms: float) -> None:
    print()
    header = ("users", "preds", "saves", "errors", "target/s", "pred/s", "p50 ms", "p95 ms", "p99 ms")
    print(ROW.format(*header, "save p99", "gen CPU", "held", "files"))
    for r in results:
        rates = (f"{r.target_rate:.1f}", f"{r.rate:.1f}")
        latencies = (f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.save_p99_ms:.1f}")
        flags = ("yes" if r.held else "no", {True: "ok", False: "BAD", None: "-"}[r.files_match])
        print(ROW.format(r.users, r.predictions, r.saves, r.errors, *rates, *latencies, f"{r.client_cpu:.0%}", *flags))
    print()
    held = largest_held(results)
    print(f"held (p99 < {p99_limit_ms:g} ms, zero errors): {held if held is not None else 'no step'} users")
    if any(r.files_match is None for r in results):
        files = "not checked (a running stack's drawings folder)"
    else:
        files = "one PNG per successful save" if all(r.files_match for r in results) else "MISMATCH"
    print(f"saved drawings on disk: {files}")


def write_json(path: Path, results: list[StepResult], args: argparse.Namespace, checkpoint: Path | None) -> None:
    report = {
        "config": {
            "users": args.users,
            "duration": args.duration,
            "interval": args.interval,
            "stagger": args.stagger,
            "p99_ms": args.p99_ms,
            "checkpoint": checkpoint.name if checkpoint else None,
            "url": args.url,
            "images": args.images,
        },
        "steps": [{k: none_if_nan(v) for k, v in asdict(r).items()} for r in results],
        "held_users": largest_held(results),
        "files_match": None if args.url else all(r.files_match for r in results),
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("results written to %s", path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check while the stack starts
    args = parse_args()
    exit_on_sigterm()
    checkpoint = None if args.url else args.checkpoint or bundled_checkpoint()
    if checkpoint and not checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {checkpoint} (use --checkpoint PATH)")
    predictions = prediction_feed(load_drawings(args.data, args.images))
    saves = save_feed(load_labelled_drawings(args.data, sum(args.users), seed=1))
    if args.url:
        logger.info("loading the running stack at %s (nothing started)", args.url)
        results = asyncio.run(load_test(Endpoints(args.url.rstrip("/")), predictions, saves, args, img_root=None))
    else:
        with tempfile.TemporaryDirectory(prefix="doodle-load-") as root:
            with serving_stack(Path(root), checkpoint) as urls:
                img_root = urls.settings.img_data_location
                results = asyncio.run(load_test(urls, predictions, saves, args, img_root))
    print_report(results, args.p99_ms)
    if args.json:
        write_json(args.json, results, args, checkpoint)
    if any(r.files_match is False for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
