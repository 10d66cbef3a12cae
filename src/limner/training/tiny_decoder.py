"""`limner train tiny-decoder`: distil a TAESD-format decoder from a VAE, on your images.

TAESD decodes Stable Diffusion latents at a few percent of the VAE decoder's cost, which
makes live previews and `--fast-decode` cheap; offline, its published weights cannot be
fetched. This trains one for any diffusers AutoencoderKL (`--vae FOLDER`, or the built-in
model's) by knowledge distillation: crops of the training images are encoded by the VAE,
and the student learns to reproduce the VAE decoder's pixels from those latents
(`limner.runtime.tiny_decoder.distillation_loss`). Images come from a `limner data emoji`
dataset or any folder of PNG/JPEG/WebP files. Resumable like every trainer; `--export
FILE` writes the EMA weights in TAESD's original layout, which `--preview-decoder` reads.

For the built-in model it does not pay: its own VAE decoder (16-64 channels) is about 3x
cheaper at 128x128 than a TAESD decoder (64 channels at every stage; measured 264 vs
798 ms, one thread), so the built-in model ships none.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limner.errors import InvalidRequestError
from limner.training import Trainer, register

RESUME_KEYS = ("data", "vae", "batch_size", "crop", "lr", "seed", "limit", "ema_decay", "init")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class TinyDecoderTrainConfig:
    data: str
    run_dir: str
    vae: str = "builtin"  # "builtin" or a diffusers AutoencoderKL folder
    steps: int = 3000
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    seed: int = 0
    limit: int = 0  # use only the first N images (0: all)
    precision: str = "auto"
    threads: int = 1
    checkpoint_every: int = 250
    sample_every: int = 500
    log_every: int = 20
    init: str = ""  # a TAESD-format decoder file to start from
    quiet: bool = False


class ImageFolder:
    """The images of a folder (sorted by name), as `SceneBatches` serves scenes."""

    def __init__(self, folder: str | Path, limit: int = 0, min_side: int = 8):
        files = sorted(
            p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not files:
            raise InvalidRequestError(f"{folder}: no PNG, JPEG or WebP images")
        self.files = files[:limit] if limit > 0 else files
        self.size = len(self.files)
        self.min_side = min_side

    def indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        return rng.integers(0, self.size, size=batch_size)

    def images(self, indices) -> list[np.ndarray]:
        from limner.images import load_image

        out = []
        for i in indices:
            image = load_image(self.files[int(i)], what="training image").convert("RGB")
            short = min(image.size)
            if short < self.min_side:  # upscale small images to at least one crop
                factor = self.min_side / short
                image = image.resize((round(image.width * factor), round(image.height * factor)))
            w, h = image.width // 8 * 8, image.height // 8 * 8  # the VAE's grid
            out.append(np.asarray(image)[:h, :w])
        return out


def image_source(data: str, limit: int, crop: int):
    """A `limner data emoji` dataset (it has train.jsonl) or a folder of images."""
    from limner.training.data import SceneBatches

    if (Path(data) / "train.jsonl").is_file():
        return SceneBatches(data, "train", limit)
    if not Path(data).is_dir():
        raise InvalidRequestError(f"--data {data}: no such folder")
    return ImageFolder(data, limit, min_side=crop)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TinyDecoderTrainConfig(data="", run_dir="")
    p.add_argument(
        "--data", required=True, help="a `limner data emoji` dataset or a folder of images"
    )
    p.add_argument("--run-dir", required=True, help="folder for checkpoint, log and samples")
    p.add_argument("--vae", default=d.vae, help="'builtin' or a diffusers AutoencoderKL folder")
    p.add_argument("--steps", type=int, default=d.steps, help=f"(default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--crop", type=int, default=d.crop, help="crop size, a multiple of 8")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--init", default="", help="a TAESD-format decoder file to start from")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the run's EMA weights as a TAESD decoder (.safetensors) and exit",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from limner.training import tiny_decoder_loop
    from limner.training.options import config_from_args

    config = config_from_args(TinyDecoderTrainConfig, args)
    if args.export is not None:
        print(tiny_decoder_loop.export(Path(config.run_dir), args.export))
        return 0
    tiny_decoder_loop.train(config, resume=args.resume)
    return 0


register(
    Trainer(
        "tiny-decoder",
        "distil a TAESD-format tiny decoder from a VAE (previews, --fast-decode)",
        add_arguments,
        run,
    )
)
