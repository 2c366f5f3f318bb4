"""Soak: steady drawing users and savers for --minutes, with one retraining run promoted and hot-swapped under load.

Run: .venv/bin/python bench/soak.py [--minutes 10] [--json out.json]
Quick check: .venv/bin/python bench/soak.py --minutes 1.5

Everything runs in a temporary folder on free 127.0.0.1 ports: a fresh SQLite MLflow store, the
project's model server (`doodle serve-model`, which follows the alias) and the backend. The pipeline's
run store is SQLite there too, or DATABASE_URL when it is set.

The served base model must not know --new-classes: by default it is the bundled model with those
classes cut from its head and replay bank (the backbone stays as trained; --checkpoint serves another).
Against it, for --minutes:
  - --users drawing users, each with its own keep-alive connection: a prediction every --interval
    seconds, each a different real Quick Draw drawing, for --draw-seconds, then a save of a labelled
    drawing, and again;
  - --savers savers, each saving a labelled drawing every --save-interval seconds. The first saves are
    --new-per-class real drawings of each new class, the rest are drawn from every category.
At --pipeline-at of the duration (later if the new-class drawings are not all saved yet) one
`doodle pipeline run` starts as a subprocess with the stack's settings while the load goes on. It must
promote a new model version, and the answers' model_version must then change to it. The load goes on
past --minutes until the pipeline has ended and the swap shows (at most --swap-timeout more seconds).

Checked at the end, each PASS or FAIL (the script exits 1 on any FAIL):
  - no failed request: every prediction and save answered 200;
  - the pipeline exited 0 and promoted a new version;
  - the model server swapped to it: the last answer came from the promoted version;
  - every successful save is accounted for exactly once: still a PNG under IMG_DATA_LOCATION, moved
    to the pipeline's rejected/ folder, or consumed into the training data. The pipeline's committed
    rows (ledger.json and its <category>.npy files) must be exactly the consumed drawings as the
    pipeline stores them (compared row by row): none lost, none twice;
  - the backend's resident memory (VmRSS in /proc, sampled every --rss-every seconds) grew less than
    --max-rss-growth percent from the first sample after --warmup to the end.
On a FAIL the work folder (logs, stores, drawings) is kept and its path printed.
"""

import argparse
import asyncio
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import torch
from common import (
    QUICKDRAW,
    Feed,
    ServingStack,
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
from torch import nn

from doodle.config import Settings, settings_env
from doodle.imaging import decode_image, decode_png, normalize_drawing, to_png
from doodle.model.net import load_checkpoint, load_replay, save_checkpoint
from doodle.model.registry import alias_version, bundled_checkpoint
from doodle.pipeline.ledger import load_ledger, read_rows

logger = logging.getLogger("bench.soak")

PIPELINE_COMMAND = [sys.executable, "-m", "doodle.cli", "pipeline", "run"]
NEW_CLASSES = ["bicycle", "eye"]


@dataclass
class PipelineOutcome:
    started_at: float  # seconds since the load started
    seconds: float
    exit_code: int
    version_before: str | None
    version_after: str | None
    promoted: bool  # the gate's decision, from the run's register stage
    gate: str  # the gate's reason
    converted: int | None  # drawings the convert stage reports


@dataclass
class Accounting:
    saved: int  # saves answered 200
    duplicate_names: int  # the same filename returned twice
    still_png: int
    rejected: int  # moved to the data folder's rejected/ by the convert stage
    consumed: int  # neither: converted into training rows
    rows_added: int  # committed rows in the training data
    missing_rows: int  # consumed drawings with no row of their own in their category
    extra_rows: int  # rows no consumed drawing of their category accounts for
    unexpected_files: int  # PNGs no successful save named
    other_files: int  # anything else under IMG_DATA_LOCATION, e.g. a leftover temp file
    pending_deletes: int  # PNGs the ledger still lists as converted but not yet deleted
    per_category: dict[str, tuple[int, int]] = field(default_factory=dict)  # category -> (consumed, rows)

    @property
    def ok(self) -> bool:
        problems = (self.duplicate_names, self.missing_rows, self.extra_rows, self.unexpected_files)
        return not any((*problems, self.other_files, self.pending_deletes))


@dataclass
class RssSummary:
    start_kb: int
    peak_kb: int
    end_kb: int

    @property
    def growth(self) -> float:
        return (self.end_kb - self.start_kb) / self.start_kb


@dataclass
class SoakRun:
    tally: Tally
    pipeline: PipelineOutcome
    rss_samples: list[tuple[float, int]]  # (seconds since the load started, kB)
    started: float  # perf_counter time the load started
    seconds: float  # how long the load ran, the wait for the swap included


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="duration of the load")
    parser.add_argument("--users", type=int, default=20, help="drawing users")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between a user's predictions")
    parser.add_argument("--draw-seconds", type=float, default=20.0, help="seconds a user draws before saving")
    parser.add_argument("--savers", type=int, default=2, help="users who only save labelled drawings")
    parser.add_argument("--save-interval", type=float, default=0.2, help="seconds between a saver's saves")
    parser.add_argument("--new-classes", nargs="+", default=NEW_CLASSES, help="categories the base must not know")
    parser.add_argument("--new-per-class", type=int, default=120, help="drawings of each new class saved first")
    parser.add_argument("--pipeline-at", type=float, default=0.4, help="fraction of the duration")
    parser.add_argument("--swap-timeout", type=float, default=120.0, help="seconds to wait for the swap")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the first RSS sample counts")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="percent the backend's RSS may grow")
    parser.add_argument("--checkpoint", type=Path, default=None, help="base model without --new-classes")
    parser.add_argument("--data", type=Path, default=QUICKDRAW, help="folder of Quick Draw <category>.npy files")
    parser.add_argument("--images", type=int, default=20_000, help="distinct drawings to cycle through")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.minutes <= 0 or min(args.users, args.savers, args.new_per_class, args.images) < 1:
        parser.error("--minutes must be > 0; --users, --savers, --new-per-class and --images >= 1")
    if min(args.interval, args.draw_seconds, args.save_interval, args.rss_every) <= 0:
        parser.error("--interval, --draw-seconds, --save-interval and --rss-every must be > 0")
    if not 0 < args.pipeline_at < 1:
        parser.error("--pipeline-at is a fraction of the duration, between 0 and 1")
    if args.warmup is None:
        args.warmup = min(30.0, 6.0 * args.minutes)  # 10% of the duration, at most 30 s
    return args


def base_without(checkpoint: Path, dropped: list[str], out: Path) -> Path:
    """`checkpoint` minus the `dropped` classes (their head rows and replay features), saved to `out`."""
    net, categories, meta = load_checkpoint(checkpoint)
    unknown = set(dropped) - set(categories)
    if unknown:
        raise SystemExit(f"{checkpoint.name} does not know {', '.join(sorted(unknown))}: nothing to cut")
    keep = [label for label, category in enumerate(categories) if category not in dropped]
    head = nn.Linear(net.head.in_features, len(keep))
    with torch.no_grad():
        head.weight.copy_(net.head.weight[keep])
        head.bias.copy_(net.head.bias[keep])
    net.head, net.config.num_classes = head, len(keep)
    replay = load_replay(checkpoint)
    if replay is not None:
        kept = torch.isin(replay["labels"], torch.tensor(keep))
        relabel = torch.full((len(categories),), -1, dtype=torch.int64)
        relabel[keep] = torch.arange(len(keep))
        replay = {name: values[kept] for name, values in replay.items()}
        replay["labels"] = relabel[replay["labels"]]
    save_checkpoint(out, net, [categories[label] for label in keep], replay=replay, **meta)
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def sample_rss(pid: int, samples: list[tuple[float, int]], started: float, every: float, stop) -> None:
    """(seconds since `started`, RSS in kB) every `every` seconds, and once more when `stop` is set."""
    while True:
        samples.append((time.perf_counter() - started, rss_kb(pid)))
        if stop.is_set():
            return
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


def saved_per_category(tally: Tally) -> Counter:
    return Counter(name.split("/")[0] for name, _ in tally.saved)


def newest_run_output(settings: Settings, stage: str) -> dict:
    runs = [path for path in (settings.pipeline_dir / "runs").glob("*") if path.name.isdigit()]
    path = max(runs, key=lambda run: int(run.name), default=settings.pipeline_dir) / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else {}


async def pipeline_under_load(
    settings: Settings, tally: Tally, args: argparse.Namespace, started: float, start_at: float
) -> PipelineOutcome:
    """Wait for `start_at` and the new-class drawings, then run the pipeline once as a subprocess."""
    await asyncio.sleep(max(0.0, started + start_at - time.perf_counter()))
    while any(saved_per_category(tally)[c] < args.new_per_class for c in args.new_classes):
        await asyncio.sleep(0.5)
    version_before = await asyncio.to_thread(alias_version, settings.model_name, settings.model_alias)
    at = time.perf_counter()
    logger.info("pipeline run starts at %.0f s, saved so far %d", at - started, len(tally.saved))
    with open(settings.log_dir / "pipeline_run.log", "wb") as log:
        process = await asyncio.create_subprocess_exec(
            *PIPELINE_COMMAND,
            env={**os.environ, **settings_env(settings)},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its stage subprocesses share its group, so one signal stops them all
        )
        try:
            code = await process.wait()
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
    seconds = time.perf_counter() - at
    version_after = await asyncio.to_thread(alias_version, settings.model_name, settings.model_alias)
    register = newest_run_output(settings, "register")
    logger.info("pipeline run exit %d after %.0f s: version %s -> %s", code, seconds, version_before, version_after)
    return PipelineOutcome(
        started_at=at - started,
        seconds=seconds,
        exit_code=code,
        version_before=version_before,
        version_after=version_after,
        promoted=bool(register.get("promoted")),
        gate=register.get("reason", "no register output"),
        converted=newest_run_output(settings, "convert").get("total"),
    )


async def wait_for_version(tally: Tally, version: str | None, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while tally.latest_version != version and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)


async def soak(urls: ServingStack, predictions: Feed, saves: Feed, args: argparse.Namespace) -> SoakRun:
    """Run the load, the pipeline in its midst and the RSS sampler."""
    tally = Tally(read_versions=True)
    rss_samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    seconds = args.minutes * 60

    async def drawing_user(client: aiohttp.ClientSession, number: int) -> None:
        await asyncio.sleep(number * args.interval / args.users)  # spread over one prediction period
        while not stop.is_set():
            await draw_one(client, urls, predictions, saves, tally, args.draw_seconds, args.interval, stop)

    async def saver(client: aiohttp.ClientSession, number: int) -> None:
        await asyncio.sleep(number * args.save_interval / args.savers)
        while not stop.is_set():
            started = time.perf_counter()
            await tally.save(client, urls.save_url, saves.next())
            await asyncio.sleep(max(0.0, started + args.save_interval - time.perf_counter()))

    async with AsyncExitStack() as sessions:
        clients = [await sessions.enter_async_context(client) for client in open_clients(args.users + args.savers)]
        started = time.perf_counter()
        load = [asyncio.create_task(drawing_user(client, n)) for n, client in enumerate(clients[: args.users])]
        load += [asyncio.create_task(saver(client, n)) for n, client in enumerate(clients[args.users :])]
        sampler = asyncio.create_task(sample_rss(urls.backend.process.pid, rss_samples, started, args.rss_every, stop))
        pipeline = asyncio.create_task(
            pipeline_under_load(urls.settings, tally, args, started, args.pipeline_at * seconds)
        )
        try:
            await asyncio.sleep(seconds)
            outcome = await pipeline  # the load goes on while it runs
            await wait_for_version(tally, outcome.version_after, args.swap_timeout)
        finally:
            stop.set()
            await asyncio.gather(*load, sampler, return_exceptions=True)
            pipeline.cancel()
    return SoakRun(tally, outcome, rss_samples, started, time.perf_counter() - started)


def stored_row(save_body: bytes) -> bytes:
    """The training row the pipeline makes of a saved drawing: the backend's PNG, decoded and normalised."""
    png = to_png(normalize_drawing(decode_image(json.loads(save_body)["image"])))
    return normalize_drawing(decode_png(png)).reshape(784).tobytes()


def account_for_saves(saved: list[tuple[str, bytes]], settings: Settings) -> Accounting:
    """Where each successful save went: PNG still waiting, rejected, or a training row (exactly one)."""
    names = [name for name, _ in saved]
    pngs, other_files = stored_files(settings.img_data_location)
    rejected_root = Path(settings.data_dir) / "rejected"
    rejected = {path.relative_to(rejected_root).as_posix() for path in rejected_root.rglob("*.png")}
    ledger = load_ledger(settings.data_dir)
    rows, rows_per_category = Counter(), Counter()
    for kind in ("old", "new"):
        for category, count in getattr(ledger, kind).items():
            committed = read_rows(settings.data_dir, kind, category, count)
            rows.update((category, row.tobytes()) for row in committed)
            rows_per_category[category] += len(committed)
    consumed = [(name, body) for name, body in saved if name not in pngs and name not in rejected]
    expected = Counter((name.split("/")[0], stored_row(body)) for name, body in consumed)
    consumed_per_category = Counter(name.split("/")[0] for name, _ in consumed)
    categories = sorted(set(consumed_per_category) | set(rows_per_category))
    return Accounting(
        saved=len(saved),
        duplicate_names=len(names) - len(set(names)),
        still_png=len(pngs & set(names)),
        rejected=len(rejected & set(names)),
        consumed=len(consumed),
        rows_added=rows.total(),
        missing_rows=(expected - rows).total(),
        extra_rows=(rows - expected).total(),
        unexpected_files=len(pngs - set(names)),
        other_files=other_files,
        pending_deletes=len(ledger.consumed),
        per_category={c: (consumed_per_category[c], rows_per_category[c]) for c in categories},
    )


def summarise_rss(samples: list[tuple[float, int]], warmup: float) -> RssSummary:
    counted = [kb for at, kb in samples if at >= warmup] or [samples[-1][1]]
    return RssSummary(start_kb=counted[0], peak_kb=max(counted), end_kb=counted[-1])


def criteria(run: SoakRun, accounting: Accounting, rss: RssSummary, args) -> dict[str, tuple[bool, str]]:
    """Each criterion: (passed, what was measured)."""
    tally, outcome = run.tally, run.pipeline
    failures = ", ".join(f"{kind} x{n}" for kind, n in tally.failure_kinds().most_common()) or "none"
    new = outcome.version_after
    promoted = outcome.exit_code == 0 and outcome.promoted and new != outcome.version_before
    swap = f"answers per version {dict(tally.versions)}, the last from version {tally.latest_version}"
    if new in tally.first_seen:
        swap += f"; version {new} first answered at {tally.first_seen[new] - run.started:.1f} s"
    if outcome.version_before in tally.last_seen:
        swap += (
            f", version {outcome.version_before} last at {tally.last_seen[outcome.version_before] - run.started:.1f} s"
        )
    return {
        "no failed requests": (tally.errors == 0, f"{tally.errors} failed: {failures}"),
        "pipeline promoted a new version": (
            promoted,
            f"exit {outcome.exit_code}, version {outcome.version_before} -> {new}; gate: {outcome.gate}",
        ),
        "model server swapped to it": (promoted and tally.latest_version == new, swap),
        "every saved drawing accounted for once": (
            accounting.ok,
            f"{accounting.saved} saved = {accounting.still_png} PNGs + {accounting.rejected} rejected"
            f" + {accounting.consumed} consumed; {accounting.rows_added} rows added, {accounting.missing_rows}"
            f" missing, {accounting.extra_rows} extra; {accounting.duplicate_names} duplicate names,"
            f" {accounting.unexpected_files} unexpected PNGs, {accounting.other_files} other files,"
            f" {accounting.pending_deletes} pending deletes",
        ),
        f"backend RSS growth < {args.max_rss_growth:g}%": (
            100 * rss.growth < args.max_rss_growth,
            f"{rss.start_kb / 1024:.1f} MiB after warm-up, peak {rss.peak_kb / 1024:.1f} MiB,"
            f" end {rss.end_kb / 1024:.1f} MiB: {100 * rss.growth:+.1f}%",
        ),
    }


def print_report(run: SoakRun, accounting: Accounting, results: dict[str, tuple[bool, str]], args) -> None:
    tally, outcome = run.tally, run.pipeline
    predictions = len(tally.prediction_s)
    latencies = "/".join(f"{percentile_ms(tally.prediction_s, q):.1f}" for q in (50, 95, 99))
    print()
    print(f"load: {args.users} drawing users and {args.savers} savers for {run.seconds:.0f} s")
    print(f"      ({args.minutes:g} min asked; the load goes on until the pipeline has ended and the swap shows)")
    print(f"predictions: {predictions} answered, {predictions / run.seconds:.1f}/s, p50/p95/p99 {latencies} ms")
    print(f"saves: {len(tally.save_s)} answered, p99 {percentile_ms(tally.save_s, 99):.1f} ms")
    print(
        f"pipeline: started at {outcome.started_at:.0f} s, ran {outcome.seconds:.0f} s,"
        f" converted {outcome.converted} drawings"
    )
    if accounting.consumed != outcome.converted:
        print(f"  note: the convert stage reports {outcome.converted}, the accounting finds {accounting.consumed}")
    mismatched = {c: counts for c, counts in accounting.per_category.items() if counts[0] != counts[1]}
    if mismatched:
        print(f"  consumed vs rows per category, where they differ: {mismatched}")
    print()
    for name, (passed, measured) in results.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {measured}")


def write_json(path: Path, run: SoakRun, accounting: Accounting, rss: RssSummary, results, args) -> None:
    tally = run.tally
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
        "load_seconds": run.seconds,
        "predictions": len(tally.prediction_s),
        "saves": len(tally.save_s),
        "failures": dict(tally.failure_kinds()),
        "prediction_ms": {f"p{q}": none_if_nan(percentile_ms(tally.prediction_s, q)) for q in (50, 95, 99)},
        "save_p99_ms": none_if_nan(percentile_ms(tally.save_s, 99)),
        "answers_per_version": dict(tally.versions),
        "pipeline": asdict(run.pipeline),
        "accounting": asdict(accounting),
        "rss_kb": {**asdict(rss), "growth_percent": 100 * rss.growth, "samples": run.rss_samples},
        "criteria": {name: {"passed": passed, "measured": measured} for name, (passed, measured) in results.items()},
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("results written to %s", path)


def labelled_saves(args: argparse.Namespace) -> Feed:
    """--new-per-class drawings of each new class first, then enough drawings of every category."""
    new = load_labelled_drawings(
        args.data, args.new_per_class * len(args.new_classes), seed=1, categories=args.new_classes
    )
    saves_per_second = args.savers / args.save_interval + args.users / args.draw_seconds
    rest = load_labelled_drawings(args.data, math.ceil(args.minutes * 60 * saves_per_second), seed=2)
    return save_feed(new + rest)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check while the stack starts
    args = parse_args()
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="doodle-soak-"))
    passed = False
    try:
        if args.checkpoint:
            known = set(load_checkpoint(args.checkpoint)[1]) & set(args.new_classes)
            if known:
                raise SystemExit(f"{args.checkpoint} already knows {', '.join(sorted(known))}: see --new-classes")
        checkpoint = args.checkpoint or base_without(bundled_checkpoint(), args.new_classes, root / "base.pt")
        predictions = prediction_feed(load_drawings(args.data, args.images))
        saves = labelled_saves(args)
        overrides = {"database_url": os.environ["DATABASE_URL"]} if os.environ.get("DATABASE_URL") else {}
        with serving_stack(root, checkpoint, **overrides) as urls:
            run = asyncio.run(soak(urls, predictions, saves, args))
        accounting = account_for_saves(run.tally.saved, urls.settings)
        rss = summarise_rss(run.rss_samples, args.warmup)
        results = criteria(run, accounting, rss, args)
        print_report(run, accounting, results, args)
        if args.json:
            write_json(args.json, run, accounting, rss, results, args)
        passed = all(ok for ok, _ in results.values())
    finally:
        if passed:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"work folder kept: {root}")
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
