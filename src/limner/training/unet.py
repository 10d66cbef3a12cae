"""`limner train unet`: the built-in model's UNet2DConditionModel.

Epsilon prediction on the DDPM noise schedule of `builtin/scheduler_config.json`
(Ho et al. 2020), latents from the frozen trained VAE computed on the fly, text from the
frozen MiniLM encoded exactly as the engine encodes prompts. Captions are dropped (replaced
by the empty prompt) with probability `caption_dropout` so that one network learns the
conditional and unconditional predictions that classifier-free guidance combines (Ho &
Salimans 2022). The loss is weighted by min(SNR, 5)/SNR (Min-SNR, Hang et al. 2023), which
speeds up convergence. An EMA of the weights is kept and is what gets exported.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from limner.training import Trainer, register

RESUME_KEYS = (
    "data",
    "vae",
    "batch_size",
    "lr",
    "caption_dropout",
    "snr_gamma",
    "seed",
    "limit",
    "ema_decay",
    "init",
    "arch",
)

SAMPLE_PROMPTS = (
    "a red apple",
    "a dog on a blue background",
    "a cat to the left of a pizza",
    "a big star on a yellow background",
    "a rocket to the right of a house on a green background",
    "a small heart",
    "a tree and a sun on a purple background",
    "a grinning face",
)


@dataclass
class UnetTrainConfig:
    data: str
    run_dir: str
    vae: str = "builtin"  # a diffusers vae folder (from `limner train vae --export`)
    steps: int = 20000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    seed: int = 0
    limit: int = 0
    precision: str = "auto"
    threads: int = 1  # torch CPU threads (the machine is shared)
    checkpoint_every: int = 100
    sample_every: int = 500
    log_every: int = 20
    init: str = ""  # "" (fresh), "builtin", or a diffusers unet folder
    arch: str = ""  # architecture config JSON (default: the built-in one)
    quiet: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder from `limner data emoji`")
    p.add_argument("--run-dir", required=True, help="folder for checkpoint, log and samples")
    p.add_argument(
        "--vae",
        default="builtin",
        help="the frozen VAE: 'builtin' or a diffusers vae folder (default builtin)",
    )
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200, help="steps of linear lr warm-up")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="for CFG (default 0.1)")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="Min-SNR gamma (0: plain MSE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only the first N scenes (0: all)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--sample-every", type=int, default=500, help="steps between sample grids")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument(
        "--init", default="", help="start from weights: 'builtin' or a diffusers unet folder"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the run's EMA weights as fp16 safetensors to DIR/unet and exit",
    )
    p.add_argument(
        "--arch",
        default="",
        help="architecture config JSON for a fresh model (default: the built-in one)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> UnetTrainConfig:
    fields = UnetTrainConfig.__dataclass_fields__
    return UnetTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def run(args: argparse.Namespace) -> int:
    from limner.training import unet_loop

    config = config_from_args(args)
    if args.export is not None:
        print(unet_loop.export(Path(config.run_dir), args.export))
        return 0
    unet_loop.train(config, resume=args.resume)
    return 0


register(
    Trainer("unet", "the built-in model's UNet (text-conditioned denoiser)", add_arguments, run)
)
