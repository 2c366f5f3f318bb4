"""Per-image inference latency of a checkpoint at batch 1 on this CPU.

Run: .venv/bin/python bench/inference.py [--checkpoint PATH] [--threads 1]
Prints p50/p99 of the served network (BatchNorm folded, channels-last) alone and of the
model's whole per-request work (decode base64, normalise, network, softmax), against a
baseline measured in the same run: the checkpoint's network as trained, at 2 threads.
"""

import argparse
import base64
import time
from pathlib import Path

import numpy as np
import torch

from doodle.model.data import to_tensor
from doodle.model.evaluate import predict_proba
from doodle.model.net import fuse_for_inference, load_checkpoint
from doodle.model.pyfunc import to_bitmaps
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
    payloads = [base64.b64encode(image.tobytes()).decode() for image in images]
    served = fuse_for_inference(net)

    def as_trained(tensor):
        with torch.inference_mode():
            return net(tensor)

    def network(tensor):
        with torch.inference_mode():
            return served(tensor)

    def full(payload):
        return predict_proba(served, to_bitmaps([payload]))

    for call, inputs in ((as_trained, tensors), (network, tensors), (full, payloads)):
        time_calls(call, inputs, 100)  # warm-up

    torch.set_num_threads(2)
    base_p50, base_p99 = percentiles(time_calls(as_trained, tensors, args.repeats))
    torch.set_num_threads(args.threads)
    net_p50, net_p99 = percentiles(time_calls(network, tensors, args.repeats))
    full_p50, full_p99 = percentiles(time_calls(full, payloads, args.repeats))
    print(f"checkpoint {args.checkpoint.name}: {sum(p.numel() for p in net.parameters()):,} parameters")
    print(f"baseline: network as trained, 2 threads:  p50 {base_p50:.3f} ms  p99 {base_p99:.3f} ms")
    print(f"served network, {args.threads} thread(s):            p50 {net_p50:.3f} ms  p99 {net_p99:.3f} ms")
    print(f"decode + normalise + network, {args.threads} thread(s): p50 {full_p50:.3f} ms  p99 {full_p99:.3f} ms")
    print(f"ratio network p50 vs baseline: {base_p50 / net_p50:.2f}x")


if __name__ == "__main__":
    main()
