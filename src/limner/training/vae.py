"""`limner train vae`: the built-in model's AutoencoderKL (8x down, 4 latent channels).

Loss: L1 reconstruction of the decoded posterior sample plus a small KL term, as in the
KL-regularised autoencoder of Rombach et al. 2022 (LDM) without its perceptual and
adversarial terms (no pretrained perceptual network exists offline). Being fully
convolutional, it trains on random crops (default 64x64) of the 128x128 renders, four
times cheaper per image, and runs at 128x128.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from limner.training import Trainer, register
from limner.training.options import add_generator_arguments, config_from_args

# Options that must match to resume a run exactly.
RESUME_KEYS = (
    "data",
    "batch_size",
    "crop",
    "lr",
    "kl_weight",
    "seed",
    "limit",
    "ema_decay",
    "init",
    "arch",
    "decoder_only",
)


@dataclass
class VaeTrainConfig:
    data: str
    run_dir: str
    steps: int = 6000
    batch_size: int = 16
    crop: int = 64
    lr: float = 4e-4
    warmup: int = 200
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" to lr_floor x lr
    lr_floor: float = 0.0
    kl_weight: float = 1e-6
    ema_decay: float = 0.999
    seed: int = 0
    limit: int = 0  # use only the first N training scenes (0: all), for smoke runs
    precision: str = "auto"
    threads: int = 1  # torch CPU threads (the machine is shared)
    checkpoint_every: int = 250
    sample_every: int = 500
    log_every: int = 20
    init: str = ""  # "" (fresh), "builtin", or a diffusers vae folder
    arch: str = ""  # architecture config JSON (default: the built-in one)
    # Train the decoder alone, the encoder (and so the latent space) frozen: a UNet can
    # train on latents of --init while the decoder goes on improving, as SD's
    # ft-MSE decoder was fine-tuned under a fixed encoder.
    decoder_only: bool = False
    quiet: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_generator_arguments(p, VaeTrainConfig(data="", run_dir=""), "vae")
    p.add_argument("--crop", type=int, default=64, help="training crop size, a multiple of 8")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="train only the decoder of --init; its encoder and latent space stay fixed",
    )


def run(args: argparse.Namespace) -> int:
    from limner.training import vae_loop

    config = config_from_args(VaeTrainConfig, args)
    if args.export is not None:
        out = vae_loop.export(Path(config.run_dir), args.export, data=config.data)
        print(out)
        return 0
    vae_loop.train(config, resume=args.resume)
    return 0


register(Trainer("vae", "the built-in model's VAE (AutoencoderKL)", add_arguments, run))
