"""Ships a trained run inside the package: copies its config, input spec, evaluation
parameters (and fitted prior) into jaxae/pretrained_models/NAME/ with a card whose
number is the one evaluate.py measured on that run (DIR/eval_<split>.json).

    python benchmarks/export_pretrained.py --workdir runs/row1 --name vae_burda_dynamic \
        --protocol "dynamic binarization, 59,600 train, IWAE k=5000" --metric nll_iwae \
        --paper "Burda et al. 2015" --paper_value 86.76 --command "..." --hardware "2-core CPU" \
        --wall_time "3 h"
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # This checkout's jaxae.
from jaxae import cli, data, evaluation, inputs, pretrained, workdir  # noqa: E402
from jaxae.errors import ConfigError  # noqa: E402

SPOT_IMAGES, SPOT_SAMPLES = 20, 100


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--split", default="test", help="the split evaluate.py was run on (default: test)")
    parser.add_argument("--protocol", required=True, help="binarization, training split, bound and k, in words")
    parser.add_argument("--metric", default="nll_iwae", help="the eval_<split>.json key to report")
    parser.add_argument("--paper", default="")
    parser.add_argument("--paper_value", type=float, default=None)
    parser.add_argument("--command", default="")
    parser.add_argument("--hardware", default="")
    parser.add_argument("--wall_time", default="")
    args = parser.parse_args(argv)
    path = os.path.join(args.workdir, f"eval_{args.split}.json")
    try:
        with open(path) as f:
            result = json.load(f)
    except OSError as e:
        raise ConfigError(f"run evaluate.py --split {args.split} on {args.workdir!r} first ({e})") from None
    if args.metric not in result:
        raise ConfigError(f"--metric {args.metric!r} is not in {path!r}: {sorted(result)}")
    config = workdir.load_config(args.workdir)
    model, params, step = workdir.load_model(args.workdir)
    split = data.load_split(data.prepared_builder(config.data), args.split, config.data.image_size)
    spot = {"num_images": SPOT_IMAGES, "iwae_samples": SPOT_SAMPLES}
    if model.bound:
        got = evaluation.evaluate_full(model, params, split.images[:SPOT_IMAGES], inputs.eval_key(),
                                       iwae_samples=SPOT_SAMPLES, batch_size=SPOT_IMAGES, chunk=SPOT_SAMPLES)
        spot.update(nelbo=got["nelbo"], nll_iwae=got["nll_iwae"])
    card = pretrained.Card(
        name=args.name, dataset=config.data.dataset, protocol=args.protocol, metric=args.metric,
        value=float(result[args.metric]), split=args.split, iwae_samples=int(result.get("iwae_samples", 0)),
        paper=args.paper, paper_value=args.paper_value, command=args.command, hardware=args.hardware,
        wall_time=args.wall_time, images_seen=int(step) * config.run.batch_size, spot_check=spot)
    folder = pretrained.export(args.workdir, card)
    print(f"wrote {folder}: {card.line()}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
