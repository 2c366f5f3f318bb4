"""Where a server's time goes, from a py-spy raw profile.

Record one while bench/predict.py runs (py-spy is not a project dependency; see bench/README.md):
    .venv/bin/py-spy record --pid PID --duration 12 --rate 200 --native --format raw --output backend.txt
Then: .venv/bin/python bench/profile_summary.py backend.txt [--thread "Server.run"] [--top 30]

Samples whose innermost frame waits (epoll, a queue, a condition) count as idle. The rest are busy;
each function's share is of the busy samples: inclusive (it or anything it called) and self (its own
Python code, the innermost Python frame of the sample).
"""

import argparse
from collections import Counter
from pathlib import Path

IDLE_MARKERS = ("epoll", "poll (libc", "Queue.get", "Condition.wait", "Event.wait")


def python_frames(stack: str) -> list[str]:
    """Python frames, outermost first, as 'function (file)' without line numbers."""
    return [frame.split(":")[0] for frame in stack.split(";") if ".py" in frame]


def summarise(path: Path, thread: str) -> tuple[int, int, Counter, Counter]:
    busy, idle, inclusive, own = 0, 0, Counter(), Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if thread not in stack:
            continue
        if any(marker in stack.split(";")[-1] for marker in IDLE_MARKERS):
            idle += int(count)
            continue
        busy += int(count)
        frames = python_frames(stack)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    return busy, idle, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--thread", default="", help="keep only samples whose stack contains this text")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    busy, idle, inclusive, own = summarise(args.profile, args.thread)
    if not busy:
        raise SystemExit("no busy samples matched")
    print(f"busy {busy / (busy + idle):.0%} of {busy + idle} samples")
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        for frame, count in counts.most_common(args.top):
            print(f"{count / busy:6.1%}  {frame}")


if __name__ == "__main__":
    main()
