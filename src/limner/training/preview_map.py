"""`limner train preview-map`: fit a VAE's latent-to-RGB preview map on real images.

Live previews (studio, A1111 progress API) colour each latent pixel by a linear map of
its channels instead of running the VAE decoder. A map only fits the latent space it was
made for; this fits one by least squares, from the VAE's own encodings of training
images (scaled as the sampler sees them) to those images averaged down to the latent
size, and writes it next to the weights as ``latent_rgb.json``. Seconds on a CPU. The
VAE export (`limner train vae --export`) writes one too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from limner.errors import InvalidRequestError
from limner.models.builtin import builtin_dir
from limner.models.latent_rgb import LatentRGB, fit_latent_rgb, save_latent_rgb
from limner.training import Trainer, register
from limner.training.common import images_tensor

DEFAULT_COUNT = 256


@torch.no_grad()
def fit_for_vae(vae, images: list[np.ndarray], batch_size: int = 32) -> LatentRGB:
    """The preview map of `vae` (a diffusers AutoencoderKL) fitted on `images` (H, W, 3
    uint8, sides multiples of the VAE's factor)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents, pixels = [], []
    for i in range(0, len(images), batch_size):
        x = images_tensor(images[i : i + batch_size]).to(vae.dtype)
        z = vae.encode(x).latent_dist.mode().float()
        latents.append(((z - shift) * scale).numpy())
        pixels.append(torch.nn.functional.avg_pool2d(x.float(), factor).numpy())
    return fit_latent_rgb(np.concatenate(latents), np.concatenate(pixels))


def write_preview_map(vae_folder: Path, data: str, count: int = DEFAULT_COUNT) -> Path:
    """Fit the map of the VAE in `vae_folder` on `count` training scenes of `data` and
    store it there."""
    from diffusers import AutoencoderKL

    from limner.training.data import SceneBatches

    if count < 8:
        raise InvalidRequestError("--count must be at least 8 images")
    if not (Path(vae_folder) / "config.json").is_file():
        raise InvalidRequestError(f"no diffusers VAE folder at {vae_folder}")
    vae = AutoencoderKL.from_pretrained(vae_folder, local_files_only=True).float().eval()
    batches = SceneBatches(data, "train")
    images = batches.images(range(min(count, batches.size)))
    return save_latent_rgb(fit_for_vae(vae, images), vae_folder)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder from `limner data emoji`")
    p.add_argument(
        "--vae", default="builtin", help="diffusers VAE folder, or 'builtin' (the default)"
    )
    p.add_argument(
        "--count", type=int, default=DEFAULT_COUNT, help=f"images (default {DEFAULT_COUNT})"
    )


def run(args: argparse.Namespace) -> int:
    folder = builtin_dir() / "vae" if args.vae == "builtin" else Path(args.vae)
    print(write_preview_map(folder, args.data, args.count))
    return 0


register(
    Trainer(
        "preview-map",
        "fit a VAE's latent-to-RGB map for live previews (seconds)",
        add_arguments,
        run,
    )
)
