"""jaxae's ``conv`` preset against a PyTorch eager replica of the same VAE, side by side.

    pip install torch --index-url https://download.pytorch.org/whl/cpu    # optional, benchmark only
    python benchmarks/torch_conv.py                       # batch 128, 3 rounds of 10 s each
    python benchmarks/torch_conv.py --batch_size 512 --rounds 5 --channels_last

Both train the ``conv`` preset of benchmarks/speed.py (channels 32, 64; latent 16; ReLU;
Bernoulli likelihood) on the same random uint8 28x28x1 images, dynamically binarized at
every step, with Adam (learning rate 1e-3, epsilon 1e-8), one step per image batch:

- encoder: 3x3 conv 32, 4x4 stride-2 conv 32, 3x3 conv 64, 4x4 stride-2 conv 64 (ReLU
  after each; 28 -> 14 -> 7), dense 256, dense 2 x 16 (mean, log-variance);
- decoder: dense 256, dense 7 x 7 x 64, then per stage (64, 32) a 3x3 conv to 4x the
  channels, depth-to-space 2x, ReLU and a 3x3 conv (ReLU), and a 3x3 conv to 1 logit;
- loss: binary cross-entropy of the logits (summed over pixels) + KL(q(z|x) || N(0, I)) in
  closed form, with one reparameterised sample, averaged over the batch.

jaxae runs its own train step (benchmarks/speed.py's ``train_call``: batches gathered and
binarized on the device, the call jitted); PyTorch runs the replica eagerly, the way its
users write a training loop (``torch.compile`` is left out: it needs a C++ compiler at run
time and compiles for minutes on 2 cores). The two alternate in rounds of ``--seconds``
each, in one process, so a noisy shared machine affects both alike; the report is each
round's images/s and ratio, and the median ratio. Thread counts: each library's default
(one thread per core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/speed.py
import speed  # noqa: E402

PRESET = "conv"
LATENT = 16
DENSE = 256


def torch_replica(channels_last: bool):
    """(torch, step, model): the PyTorch model and its train step ``step(images_uint8) -> loss``."""
    import torch
    from torch import nn

    class DepthToSpace(nn.Module):
        """(B, 4C, H, W) -> (B, C, 2H, 2W), the channel order of jaxae.nets.conv.upsample2x."""

        def forward(self, h):
            b, c4, height, width = h.shape
            c = c4 // 4
            h = h.reshape(b, 2, 2, c, height, width).permute(0, 3, 4, 1, 5, 2)
            return h.reshape(b, c, 2 * height, 2 * width)

    def up(c_in, c_out):
        return [nn.Conv2d(c_in, 4 * c_out, 3, padding=1), DepthToSpace(), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU()]

    class ConvVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(7 * 7 * 64, DENSE), nn.ReLU(), nn.Linear(DENSE, 2 * LATENT))
            self.dense = nn.Sequential(nn.Linear(LATENT, DENSE), nn.ReLU(), nn.Linear(DENSE, 7 * 7 * 64), nn.ReLU())
            self.decoder = nn.Sequential(*up(64, 64), *up(64, 32), nn.Conv2d(32, 1, 3, padding=1))

        def forward(self, x):
            mean, logvar = self.encoder(2 * x - 1).chunk(2, dim=1)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            h = self.dense(z).reshape(-1, 64, 7, 7)
            if channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
            logits = self.decoder(h)
            recon = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
            kl = 0.5 * (torch.exp(logvar) + mean.square() - 1 - logvar).sum(1)
            return (recon + kl).mean()

    torch.manual_seed(0)
    model = ConvVAE()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)

    def step(images):
        x = torch.bernoulli(images.float() / 255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = model(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return torch, step, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (jaxae, then PyTorch, each round)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window of each library in each round")
    parser.add_argument("--channels_last", action="store_true", help="PyTorch in NHWC memory format (default NCHW)")
    args = parser.parse_args()
    if args.batch_size < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error(f"--batch_size and --rounds must be positive and --seconds > 0, got "
                     f"{args.batch_size}, {args.rounds}, {args.seconds}")
    try:
        torch, torch_step, _ = torch_replica(args.channels_last)
    except ImportError:
        sys.exit("benchmarks/torch_conv.py needs PyTorch (a benchmark-only dependency): "
                 "pip install torch --index-url https://download.pytorch.org/whl/cpu")

    split, spec = speed.synthetic_split(max(speed.SYNTHETIC_EXAMPLES, 2 * args.batch_size))
    _, jax_call, info = speed.train_call(PRESET, args.batch_size, split, spec, None)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()            # (N, 1, 28, 28) uint8
    generator = torch.Generator().manual_seed(0)

    def torch_call():
        rows = torch.randint(0, images.shape[0], (args.batch_size,), generator=generator)
        return torch_step(images[rows])

    def time_torch(seconds: float) -> float:
        torch_call().item()                                                          # warm-up
        calls, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            torch_call().item()
            calls += 1
        return (time.perf_counter() - began) / calls

    jax_images_per_call = args.batch_size * info["steps_per_call"]
    print(f"conv preset, batch {args.batch_size}, float32, {os.cpu_count()} CPU core(s); jax {jax.__version__} "
          f"({jax.default_backend()}, {info['steps_per_call']} step(s) per call, compiled in "
          f"{info['compile_seconds']:.1f} s); torch {torch.__version__} eager "
          f"({'channels_last' if args.channels_last else 'NCHW'}, {torch.get_num_threads()} threads)")
    print(f"{'round':>5} {'jaxae img/s':>12} {'torch img/s':>12} {'jaxae/torch':>12}")
    ratios = []
    for r in range(args.rounds):
        jax_ips = jax_images_per_call / speed.perf.time_steady(jax_call, args.seconds, warmup=1)
        torch_ips = args.batch_size / time_torch(args.seconds)
        ratios.append(jax_ips / torch_ips)
        print(f"{r + 1:>5} {jax_ips:>12,.0f} {torch_ips:>12,.0f} {ratios[-1]:>11.2f}x", flush=True)
    print(f"median jaxae/torch: {statistics.median(ratios):.2f}x over {args.rounds} round(s)")


if __name__ == "__main__":
    main()
