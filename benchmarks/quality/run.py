"""Train a quality preset, then evaluate it on its reporting split: one launcher for every
preset in benchmarks/presets/.

    python benchmarks/quality/run.py vae_burda_dynamic runs/row1 --manual_dir ../shared/data/mnist
    python benchmarks/quality/run.py hvae_mnist runs/hvae --budget 240 --manual_dir ../shared/data/binarized_mnist

Extra flags go to train.py and override the preset (``--data_dir``/``--manual_dir`` are
also passed to evaluate.py). ``--budget SECONDS`` stops training gracefully (a checkpoint
is saved, as after Ctrl-C) after that much wall time and still evaluates; rerunning the
same command resumes. The preset's ``get_evaluation()`` gives evaluate.py's split, k and
batch sizes.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRESETS = os.path.join(ROOT, "benchmarks", "presets")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help=f"a file name in {PRESETS} (without .py), or a path")
    parser.add_argument("workdir")
    parser.add_argument("--budget", type=float, default=None, help="seconds of training wall time")
    parser.add_argument("--no_eval", action="store_true", help="train only")
    args, train_flags = parser.parse_known_args()
    path = args.preset if os.path.isfile(args.preset) else os.path.join(PRESETS, f"{args.preset}.py")
    if not os.path.isfile(path):
        parser.error(f"no preset {args.preset!r}; known: "
                     f"{sorted(f[:-3] for f in os.listdir(PRESETS) if f.endswith('.py'))}")
    evaluation = runpy.run_path(path).get("get_evaluation", dict)()
    train = [sys.executable, os.path.join(ROOT, "train.py"), "--config", path, "--workdir", args.workdir,
             "--no_progress", *train_flags]
    proc = subprocess.Popen(train)
    try:
        code = proc.wait(timeout=args.budget)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # Graceful: the chunk in flight finishes and is checkpointed.
        code = proc.wait()
    if code not in (0, 130) or args.no_eval:
        return code
    passed = []
    for flag in ("--data_dir", "--manual_dir"):
        if flag in train_flags:
            passed += [flag, train_flags[train_flags.index(flag) + 1]]
    evaluate = [sys.executable, os.path.join(ROOT, "evaluate.py"), "--workdir", args.workdir, "--no_progress",
                *passed, *(f"--{k}={v}" for k, v in evaluation.items())]
    return subprocess.call(evaluate)


if __name__ == "__main__":
    sys.exit(main())
