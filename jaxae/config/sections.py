"""The config's sections: one frozen dataclass each, every field with its help text,
allowed values, flag name and whether it may change on resume in ``metadata``."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxae.conditioning import CONDITIONS, DEFAULT_LOWRES_FACTOR
from jaxae.likelihoods import LIKELIHOODS
from jaxae.nets.hierarchical import PRESETS as HVAE_PRESETS
from jaxae.nets.mlp import PRESETS as MLP_PRESETS
from jaxae.objectives import TC_ESTIMATORS

INPUT_NOISE = ("none", "flip", "gaussian", "mask")
INPUT_MODES = ("auto", "resident", "streaming")
# Architecture presets: MLP widths in jaxae.nets.mlp.PRESETS, hierarchical ones (--model hvae)
# in jaxae.nets.hierarchical.PRESETS.
ARCHS = ("mlp", "mlp_flax", "mlp_burda", "conv", "resnet", *HVAE_PRESETS)
ACTIVATIONS = ("relu", "tanh", "gelu", "softplus")
BINARIZE = ("dynamic", "none")
# constant; cosine: warm-up then cosine decay to 0; burda: Burda et al. (2015)'s schedule,
# learning rate lr * 10^(-i/7) for 3^i epochs, i = 0..7 (3,280 epochs in all).
LR_SCHEDULES = ("constant", "cosine", "burda")
PARALLEL = ("sharded", "pmap")
DTYPES = ("float32", "bfloat16")
BURDA_STAGES = 8


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None, flag: str | None = None,
       resumable: bool = False) -> Any:
    """A config field: its default and, in metadata, its help text, allowed values, flag name
    (default: the field's name) and whether it may change when a run is resumed."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "flag": flag,
                                                        "resumable": resumable})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What is read and how it becomes model input (augmentation and corruption included)."""

    dataset: str = _f("mnist_5k", "TFDS image dataset name (mnist_5k is embedded and offline; shapes, "
                      "dSprites-like with known factors, is generated offline), a .npz file, or a folder of "
                      "images with train/ and test/ (optionally validation/) subfolders")
    data_dir: str | None = _f(None, "TFDS data directory (default: TFDS's own); also where image folders are "
                              "cached once decoded (default: ~/.cache/jaxae)", resumable=True)
    manual_dir: str | None = _f(None, "folder with the dataset's downloaded source files, to prepare it offline",
                                resumable=True)
    train_split: str = _f("train", "TFDS split to train on, e.g. 'train[:45000]' to hold out a validation set")
    eval_split: str = _f("test", "TFDS split to evaluate on, e.g. test or 'train[45000:]'")
    binarize: str = _f("dynamic", "dynamic: Bernoulli-binarize 8-bit images each step (a fixed draw for "
                       "evaluation); none: score grey levels", BINARIZE)
    image_size: int | None = _f(None, "resize every image once on loading: shorter side to N (antialiased), then "
                                "the centred N x N square (default: keep the native size)")
    input: str = _f("auto", "resident: the training split lives on the device; streaming: batches are read from "
                    "a memory-mapped copy on disk, one chunk ahead; auto: resident when the split fits under "
                    "--resident_limit_mib (the same batches either way)", INPUT_MODES, resumable=True)
    resident_limit_mib: int = _f(4096, "largest split (as uint8) held whole in memory and on the device",
                                 resumable=True)
    hflip: bool = _f(False, "flip training images left-right at random (augmentation; never in evaluation)")
    random_crop: bool = _f(False, "crop training images at a random offset after reflect-padding each side by "
                           "1/8 of the shorter side (augmentation; never in evaluation)")
    input_noise: str = _f("none", "corrupt the encoder input only (denoising); the likelihood scores the "
                          "clean image", INPUT_NOISE)
    noise_level: float = _f(0.0, "flip/mask probability or Gaussian std of --input_noise")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The family (jaxae.families) and its networks and likelihood."""

    family: str = _f("vae", "model family (jaxae.families registry)", flag="model")
    conditional: bool = _f(False, "condition encoder and decoder on the class label (the same as --condition "
                           "label; cvae is vae with this)")
    condition: str = _f("none", "what encoder and decoder are conditioned on: none, label (the class label, "
                        "one-hot) or lowres (x_low, the model's input x box-averaged over F x F blocks, "
                        "--lowres_factor F; for super-resolution, sample.py --upscale)", CONDITIONS)
    lowres_factor: int = _f(DEFAULT_LOWRES_FACTOR, "F of --condition lowres: x_low has sides H/F and W/F")
    arch: str = _f("mlp", "encoder/decoder architecture", ARCHS)
    hidden_dims: tuple[int, ...] = _f((512, 256), "MLP hidden widths, comma-separated")
    channels: tuple[int, ...] = _f((32, 64), "conv widths per stride-2 stage, comma-separated")
    activation: str = _f("relu", "hidden-layer nonlinearity", ACTIVATIONS)
    latent_dim: int = _f(16, "size of the latent z (z1 with two stochastic layers)")
    stochastic_layers: int = _f(1, "1, or 2 for Burda et al.'s x-z1-z2 hierarchy (mlp)")
    top_latent_dim: int = _f(50, "size of z2 with --stochastic_layers 2")
    top_hidden_dims: tuple[int, ...] = _f((100, 100), "MLP widths between z1 and z2, comma-separated")
    likelihood: str = _f("bernoulli", "pixel likelihood p(x|z)", LIKELIHOODS)
    gaussian_scale: float | None = _f(None, "fixed std of the Gaussian likelihood on [0, 1] pixels "
                                      "(default: learned)")
    num_mixtures: int = _f(10, "mixture components of --likelihood logistic_mixture")
    latent_mixture: int = _f(0, "Gaussian-mixture components fitted to the codes after training "
                             "(0: one Gaussian), for sample.py --prior fitted")

    @property
    def condition_kind(self) -> str:
        """The condition in effect: ``label`` with --conditional (older configs), else --condition."""
        return "label" if self.conditional else self.condition

    def mlp_settings(self) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        """(hidden_dims, top_hidden_dims, activation) after applying an MLP preset."""
        preset = MLP_PRESETS.get(self.arch, {})
        return (preset.get("hidden_dims", self.hidden_dims), preset.get("top_hidden_dims", self.top_hidden_dims),
                preset.get("activation", self.activation))


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the families' objectives; each family declares the ones it uses
    (``Family.settings``) and any other one set away from its default is refused."""

    beta: float = _f(1.0, "KL weight (vae, beta_vae, cvae, hvae, infovae: 1 - alpha; 1 = the ELBO)")
    kl_warmup_steps: int = _f(0, "KL weight rises linearly from 0 over N steps (vae family, hvae, vamp)")
    free_bits: float = _f(0.0, "nats of batch-averaged KL that are free: per latent dimension for the "
                          "flat VAEs, per latent group for hvae")
    num_importance_samples: int = _f(1, "K of the IWAE objective (iwae, miwae, piwae, ciwae)")
    miwae_m: int = _f(1, "M of MIWAE(M, K): the loss averages M independent K-sample IWAE bounds (miwae; "
                      "piwae's encoder, whose decoder takes the IWAE bound of all M*K samples)")
    ciwae_beta: float = _f(0.5, "beta of CIWAE = beta * ELBO + (1 - beta) * IWAE_K on the same K samples (ciwae), "
                           "in [0, 1]")
    vamp_components: int = _f(500, "K of the VampPrior: learned pseudo-inputs whose posteriors make up the "
                              "prior (vamp)")
    iaf_steps: int = _f(2, "T of the inverse autoregressive flow: IAF steps after the Gaussian posterior, "
                        "each a MADE conditioned on the encoder's context (iaf; 0: the VAE with a Monte Carlo KL)")
    iaf_hidden: int = _f(128, "units of each of the two hidden layers of every IAF step's MADE (iaf; hvae with "
                         "--group_iaf_steps)")
    group_iaf_steps: int = _f(0, "IAF steps in every latent group's posterior, each a MADE over the group's "
                              "channels at every position conditioned on a context from the posterior block "
                              "(hvae; 0: Gaussian posteriors with closed-form KLs)")
    stage1_steps: int = _f(0, "steps of stage 1 of the two-stage VAE; stage 2 trains on its codes for the rest "
                           "(two_stage; 0: half of --steps)")
    stage2_hidden: int = _f(256, "units of each of the two hidden layers of the stage-2 VAE's MLPs (two_stage)")
    mmd_weight: float = _f(10.0, "weight of MMD(q(z), p(z)) in the loss (wae: lambda; infovae: alpha + lambda - 1)")
    tc_weight: float = _f(6.0, "beta of beta-TCVAE: weight of the total correlation of q(z) in the loss, the "
                          "index-code MI and dimension-wise KL keeping weight 1 (btcvae; 1 = the ELBO)")
    tc_estimator: str = _f("mws", "btcvae's estimator of q(z) on the batch: mws, minibatch-weighted sampling (the "
                           "paper's main text), or mss, minibatch-stratified sampling (its appendix)", TC_ESTIMATORS)
    code_l2: float = _f(0.0, "L2 penalty on the code: weight of ||z||^2 (ae, rae_l2, rae_gp: beta/2 of the RAE)")
    decoder_reg: float = _f(0.0, "weight of the RAE's decoder regulariser, > 0: squared L2 norm of the decoder's "
                            "parameters (rae_l2) or squared norm of the decoder's Jacobian at the code (rae_gp)")
    draw_steps: int = _f(16, "T of DRAW: glimpses (steps of the recurrence), each with its own z_t of --latent_dim "
                         "(draw; the paper: 64 on MNIST)")
    draw_lstm: int = _f(256, "units of DRAW's encoder and decoder LSTMs (draw; the paper: 256)")
    draw_attention: bool = _f(False, "DRAW's Gaussian-filterbank read and write attention; off: read the whole "
                              "image and error image, write the whole canvas (draw)")
    draw_read_size: int = _f(2, "N of DRAW's N x N read glimpse, >= 2, with --draw_attention (the paper: 2 on MNIST)")
    draw_write_size: int = _f(5, "N of DRAW's N x N write patch, >= 2, with --draw_attention (the paper: 5 on "
                              "MNIST)")
    codebook_size: int = _f(128, "K of the VQ-VAE: codebook entries, each a --latent_dim vector, that the encoder's "
                            "grid of codes is quantized to (vqvae)")
    commitment: float = _f(0.25, "VQ-VAE commitment weight beta of ||z_e - sg[e]||^2 (vqvae)")
    pixelcnn_layers: int = _f(6, "gated layers of the PixelCNN prior over the VQ-VAE's code grid (vqvae)")
    pixelcnn_channels: int = _f(64, "channels of the PixelCNN prior over the VQ-VAE's code grid (vqvae)")
    codebook_ema: float = _f(0.0, "VQ-VAE: update the codebook by exponential moving averages of the encoder outputs "
                             "assigned to each entry, with this decay in [0, 1) (the paper's appendix: 0.99), instead "
                             "of the loss's codebook term; 0: learned by the loss (vqvae)")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam, its schedule and the update stabilisers."""

    learning_rate: float = _f(1e-3, "Adam (peak) learning rate")
    lr_schedule: str = _f("constant", "learning-rate schedule (burda: lr*10^(-i/7) for 3^i epochs, "
                          "i = 0..7, 3,280 epochs)", LR_SCHEDULES)
    warmup_steps: int = _f(0, "linear warm-up steps")
    adam_eps: float = _f(1e-8, "Adam's epsilon (Burda et al.: 1e-4)")
    grad_clip: float = _f(0.0, "clip gradients to this global norm (0: off)")
    skip_threshold: float = _f(0.0, "skip (and count) updates whose gradient norm exceeds this (0: off)")
    ema_decay: float = _f(0.0, "evaluate and sample with an exponential moving average of the params (0: off)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How long, how often, on what: nothing here changes the model."""

    steps: int = _f(6000, "training steps", resumable=True)
    epochs: int | None = _f(None, "training epochs (overrides --steps; fixed by --lr_schedule burda)",
                            resumable=True)
    batch_size: int = _f(128, "global batch size")
    seed: int = _f(0, "seed of all randomness")
    eval_every: int = _f(1000, "evaluate every N steps", resumable=True)
    checkpoint_every: int = _f(1000, "checkpoint every N steps", resumable=True)
    keep_checkpoints: int = _f(3, "checkpoints to keep", resumable=True)
    steps_per_call: int | None = _f(None, "training steps fused into one compiled call (default: "
                                    "jaxae.hardware chooses: 50, but 1 for convolutional nets on CPU)",
                                    resumable=True)
    max_nonfinite: int = _f(20, "stop after N consecutive non-finite steps (each is skipped)", resumable=True)
    max_skipped: int = _f(0, "stop after N consecutive skipped updates of any cause (non-finite or over "
                          "--skip_threshold; 0: off)", resumable=True)
    parallel: str = _f("sharded", "multi-device mode: sharded (jit over a mesh) or pmap", PARALLEL,
                       resumable=True)
    dtype: str = _f("float32", "compute dtype of the networks (params, loss and optimizer stay float32)",
                    DTYPES, resumable=True)
    remat: bool = _f(False, "recompute activations in the backward pass instead of keeping them (hvae: per "
                     "block and latent group): less memory, one more forward pass of compute", resumable=True)
    grad_accum: int = _f(1, "split each batch into N microbatches, run one after another, and apply one update "
                         "with their mean gradient (less memory, the same update)", resumable=True)


def burda_epochs() -> int:
    """Epochs of Burda et al.'s schedule: sum of 3^i for i = 0..7 = 3,280."""
    return sum(3 ** i for i in range(BURDA_STAGES))


