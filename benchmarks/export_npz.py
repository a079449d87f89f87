"""Exports TFDS splits to one .npz file that ``--dataset FILE.npz`` reads without TensorFlow,
e.g. to train on an accelerator machine that has JAX but not TFDS:

    python benchmarks/export_npz.py --dataset binarized_mnist --splits train,validation,test \
        --manual_dir DIR --out bmnist.npz
    python train.py --dataset bmnist.npz --eval_split validation ...
"""

from __future__ import annotations

import argparse
import sys

from jaxae import cli, data
from jaxae.config import DataConfig, ModelConfig


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="TFDS dataset name")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits (default: train,test)")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--out", required=True, help="the .npz file to write")
    args = parser.parse_args(argv)
    cli.quiet_libraries()
    source = DataConfig(dataset=args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir)
    builder = data.prepared_builder(source)
    splits = {name: data.load_split(builder, name) for name in args.splits.split(",")}
    num_classes = data.input_spec(source, ModelConfig(), builder, next(iter(splits.values()))).num_classes
    data.save_npz(args.out, splits, num_classes)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.images.shape}" for k, v in splits.items()))


if __name__ == "__main__":
    sys.exit(cli.run(main))
