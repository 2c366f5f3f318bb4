"""How cheaply the backend counts waiting drawings: WaitingDrawings against a full listing.

Fills a temporary drawings store (20 categories, 1,000 drawings each by default), then times, per
call, what `GET /model` does (WaitingDrawings.counts: stat the category folders, list only those
that changed) against listing every folder (doodle.drawings.list_drawings, what a naive count does),
while one save a second lands in one category, as in a busy deployment.

    .venv/bin/python bench/waiting.py
    .venv/bin/python bench/waiting.py --categories 100 --drawings 500
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from doodle.drawings import WaitingDrawings, list_drawings, save_drawing


def timed(call, repeat: int) -> float:
    """Median seconds per call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--drawings", type=int, default=1000, help="per category")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for category in range(args.categories):
            for _ in range(args.drawings):
                save_drawing(root, f"category_{category}", b"png")
        waiting = WaitingDrawings(root)
        WaitingDrawings.RECENT_NS = 0  # the fill above is long past for this measurement
        first = timed(waiting.counts, 1)
        cached = timed(waiting.counts, args.repeat)
        walk = timed(lambda: list_drawings(root), max(5, args.repeat // 5))

        def save_then_count() -> None:
            save_drawing(root, "category_0", b"png")
            waiting.counts()

        busy = timed(save_then_count, args.repeat) - timed(lambda: save_drawing(root, "category_1", b"png"), 20)
        assert sum(waiting.counts().values()) == sum(len(p) for p in list_drawings(root).values())

    total = args.categories * args.drawings
    print(f"{total:,} waiting drawings in {args.categories} categories")
    print(f"full listing (baseline)         {walk * 1000:8.2f} ms per count")
    print(f"WaitingDrawings, first call     {first * 1000:8.2f} ms")
    print(f"WaitingDrawings, nothing new    {cached * 1000:8.2f} ms  ({walk / cached:,.0f}x faster than listing)")
    print(f"WaitingDrawings, after a save   {busy * 1000:8.2f} ms  ({walk / busy:,.1f}x faster than listing)")


if __name__ == "__main__":
    main()
