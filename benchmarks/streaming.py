"""Streaming against resident input: the same train.py run (MLP VAE, batch 128) with the
training split on the device (--input resident) and read from its memory-mapped copy on
disk one chunk ahead (--input streaming); alternated REPEATS times, medians and their ratio.

    python benchmarks/streaming.py [--dataset mnist_5k] [--steps 3000] [--repeats 3] [train.py flags]

images/s is train.py's own steady-state figure (compilation excluded; the streamed runs
include any wait for the host to read the next chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images_per_sec(mode: str, args, extra: list[str], folder: str) -> float:
    workdir = tempfile.mkdtemp(prefix=f"{mode}-", dir=folder)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--workdir", workdir, "--input", mode,
                          "--dataset", args.dataset, "--steps", str(args.steps), "--eval_every", str(args.steps),
                          "--checkpoint_every", str(args.steps), "--batch_size", "128", "--no_progress", *extra],
                         capture_output=True, text=True, check=True).stdout
    final = json.loads(out.split("final: ", 1)[1].splitlines()[0])
    return final["train_images_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args, extra = parser.parse_known_args()
    results: dict[str, list[float]] = {"resident": [], "streaming": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for mode in results:
                results[mode].append(images_per_sec(mode, args, extra, folder))
    medians = {mode: statistics.median(values) for mode, values in results.items()}
    for mode, values in results.items():
        print(f"{mode:10s} median {medians[mode]:>9,.0f} images/s  runs: {', '.join(f'{v:,.0f}' for v in values)}")
    print(f"streaming / resident: {medians['streaming'] / medians['resident']:.2f}")


if __name__ == "__main__":
    main()
