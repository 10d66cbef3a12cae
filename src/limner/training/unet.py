"""`limner train unet`: the built-in model's UNet2DConditionModel.

Epsilon prediction on the DDPM noise schedule of `builtin/scheduler_config.json`
(Ho et al. 2020), latents from the frozen trained VAE computed on the fly, text from the
frozen MiniLM encoded exactly as the engine encodes prompts. Captions are dropped (replaced
by the empty prompt) with probability `caption_dropout` so that one network learns the
conditional and unconditional predictions that classifier-free guidance combines (Ho &
Salimans 2022). The loss is weighted by min(SNR, 5)/SNR (Min-SNR, Hang et al. 2023), which
speeds up convergence. `foreground_weight` > 1 weights the latent cells under the emoji
that much more than the background (then normalised so each image's weights average 1):
the backgrounds are flat colours or gradients the model learns early, and without the
weight they take most of the loss while what tells emoji apart is in a few cells.
`context_noise` > 0 adds Gaussian noise of that std to the text embeddings of the captioned
samples (never to the empty prompt's, which guidance uses exactly): a held-out synonym's
embedding lies near its trained name's (MiniLM is a sentence-similarity model), and noise
teaches the UNet to answer nearby embeddings alike, as NEFTune's embedding noise does for
instruction-tuned language models (Jain et al. 2023). An EMA of the weights is kept and is
what gets exported. `cache` keeps the frozen encoders' outputs per scene on disk
(`limner.training.encode_cache`), so a scene drawn again costs only the UNet's step.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from limner.training import Trainer, register
from limner.training.options import add_generator_arguments, config_from_args

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
    "single_fraction",
    "foreground_weight",
    "grown_lr_scale",
    "context_noise",
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
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" to lr_floor x lr
    lr_floor: float = 0.0
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
    single_fraction: float = 0.0  # share of each batch from single-emoji scenes (0: uniform)
    foreground_weight: float = 1.0  # loss weight of latent cells under emoji (1: uniform)
    grown_lr_scale: float = 1.0  # learning rate of parts grown by --init with --arch, x lr
    context_noise: float = 0.0  # std of Gaussian noise on captioned text embeddings (0: none)
    cache: str = ""  # folder of the frozen encoders' outputs per scene ("": none)
    quiet: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_generator_arguments(p, UnetTrainConfig(data="", run_dir=""), "unet")
    p.add_argument(
        "--vae",
        default="builtin",
        help="the frozen VAE: 'builtin' or a diffusers vae folder (default builtin)",
    )
    p.add_argument("--caption-dropout", type=float, default=0.1, help="for CFG (default 0.1)")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="Min-SNR gamma (0: plain MSE)")
    p.add_argument(
        "--single-fraction",
        type=float,
        default=0.0,
        help="share of each batch drawn from the single-emoji scenes, the rest from scenes "
        "of two or three (default 0: uniformly from all scenes, about 40%% single)",
    )
    p.add_argument(
        "--foreground-weight",
        type=float,
        default=1.0,
        help="loss weight of the latent cells under the emoji relative to the background "
        "(default 1: uniform)",
    )
    p.add_argument(
        "--grown-lr-scale",
        type=float,
        default=1.0,
        help="learning rate of the parts an --arch adds to --init's weights, as a multiple "
        "of --lr (default 1): they start at zero and have everything to learn",
    )
    p.add_argument(
        "--context-noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise added to the text embeddings of captioned (not dropped) "
        "samples, so that nearby embeddings, like a synonym's, give nearby images (default "
        "0: none; MiniLM's embeddings have an RMS of about 0.4)",
    )
    p.add_argument(
        "--cache",
        default="",
        metavar="DIR",
        help="keep the frozen encoders' outputs for each scene in DIR (MiniLM's text states, "
        "the VAE's posterior) and read them when the scene is drawn again: the same "
        "training, less computed; sparse files that grow to about 126 KB a scene "
        "(default: none)",
    )


def run(args: argparse.Namespace) -> int:
    from limner.training import unet_loop

    config = config_from_args(UnetTrainConfig, args)
    if args.export is not None:
        print(unet_loop.export(Path(config.run_dir), args.export))
        return 0
    unet_loop.train(config, resume=args.resume)
    return 0


register(
    Trainer("unet", "the built-in model's UNet (text-conditioned denoiser)", add_arguments, run)
)
