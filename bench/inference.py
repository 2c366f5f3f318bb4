"""Per-image inference latency of a checkpoint at batch 1 on this CPU.

Run: .venv/bin/python bench/inference.py [--checkpoint PATH] [--threads 1]
Prints p50/p99 of the network alone and of preprocessing plus network, against
a baseline measured in the same run: the same network in eager mode at 2 threads.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from doodle.imaging import normalize_drawing
from doodle.model.data import to_tensor
from doodle.model.net import load_checkpoint
from doodle.model.registry import bundled_checkpoint

QUICKDRAW = Path(__file__).resolve().parents[1].parent / "shared" / "quickdraw"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = np.sort(samples) * 1e3
    return float(np.percentile(ordered, 50)), float(np.percentile(ordered, 99))


def time_calls(call, inputs: list, repeats: int) -> list[float]:
    timings = []
    for i in range(repeats):
        started = time.perf_counter()
        call(inputs[i % len(inputs)])
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=bundled_checkpoint())
    parser.add_argument("--data", type=Path, default=QUICKDRAW)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()

    net, categories, _ = load_checkpoint(args.checkpoint)
    images = np.load(args.data / f"{categories[0]}.npy")[:200]
    tensors = [to_tensor(image[None]) for image in images]

    def network(tensor):
        with torch.inference_mode():
            return net(tensor)

    def full(image):
        return network(to_tensor(normalize_drawing(image.reshape(28, 28)).reshape(1, 784)))

    for call, inputs in ((network, tensors), (full, list(images))):
        time_calls(call, inputs, 100)  # warm-up

    torch.set_num_threads(2)
    base_p50, base_p99 = percentiles(time_calls(network, tensors, args.repeats))
    torch.set_num_threads(args.threads)
    net_p50, net_p99 = percentiles(time_calls(network, tensors, args.repeats))
    full_p50, full_p99 = percentiles(time_calls(full, list(images), args.repeats))
    print(f"checkpoint {args.checkpoint.name}: {sum(p.numel() for p in net.parameters()):,} parameters")
    print(f"baseline network, 2 threads:        p50 {base_p50:.3f} ms  p99 {base_p99:.3f} ms")
    print(f"network, {args.threads} thread(s):               p50 {net_p50:.3f} ms  p99 {net_p99:.3f} ms")
    print(f"normalise + network, {args.threads} thread(s):   p50 {full_p50:.3f} ms  p99 {full_p99:.3f} ms")
    print(f"ratio network p50 vs baseline: {base_p50 / net_p50:.2f}x")


if __name__ == "__main__":
    main()
