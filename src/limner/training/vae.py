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
    quiet: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder from `limner data emoji`")
    p.add_argument("--run-dir", required=True, help="folder for checkpoint, log and samples")
    p.add_argument("--steps", type=int, default=6000, help="total optimizer steps (default 6000)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=64, help="training crop size, a multiple of 8")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=200, help="steps of linear lr warm-up")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only the first N scenes (0: all)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    p.add_argument("--sample-every", type=int, default=500, help="steps between sample grids")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument(
        "--init", default="", help="start from weights: 'builtin' or a diffusers vae folder"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the run's EMA weights as fp16 safetensors to DIR/vae and exit",
    )
    p.add_argument(
        "--arch",
        default="",
        help="architecture config JSON for a fresh model (default: the built-in one)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> VaeTrainConfig:
    fields = VaeTrainConfig.__dataclass_fields__
    return VaeTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def run(args: argparse.Namespace) -> int:
    from limner.training import vae_loop

    config = config_from_args(args)
    if args.export is not None:
        out = vae_loop.export(Path(config.run_dir), args.export, data=config.data)
        print(out)
        return 0
    vae_loop.train(config, resume=args.resume)
    return 0


register(Trainer("vae", "the built-in model's VAE (AutoencoderKL)", add_arguments, run))
