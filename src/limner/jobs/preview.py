"""A cheap preview of a generation in progress, from its latents, without the VAE.

For 4-channel Stable Diffusion latents, a fixed linear map from the latent channels to
RGB approximates the VAE decoder well enough to see the composition form: the
"Approx cheap" live preview of AUTOMATIC1111 (``modules/sd_vae_approx.py``,
``cheap_approximation``), coefficients fitted by Keturn
(discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204/2).
Other channel counts are shown as their first three channels, min-max normalised.
A few thousand multiply-adds at 64 px: cheap enough for every step.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

__all__ = ["SD_LATENT_RGB", "latent_preview", "preview_png_base64"]

# (latent channel, RGB): A1111's coefficients for SD 1.x/2.x latents (scaled, as sampled).
SD_LATENT_RGB = np.array(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    dtype=np.float32,
)


def _first_sample(latents) -> np.ndarray:
    """The first latent of a batch as a float32 (C, h, w) array; takes torch or numpy."""
    if hasattr(latents, "detach"):  # a torch tensor; the jobs layer does not import torch
        latents = latents[:1].detach().float().cpu().numpy()
    array = np.asarray(latents, dtype=np.float32)
    return array[0] if array.ndim == 4 else array


def latent_preview(latents, size: int = 64) -> Image.Image:
    """An RGB image of the first latent in `latents` (B, C, h, w), longer side `size` px."""
    x = _first_sample(latents)  # (C, h, w)
    if x.shape[0] == SD_LATENT_RGB.shape[0]:
        rgb = np.einsum("chw,cr->hwr", x, SD_LATENT_RGB)  # (h, w, 3), about -1..1
        rgb = (rgb + 1.0) / 2.0
    else:
        rgb = np.moveaxis(np.resize(x, (3, *x.shape[1:])), 0, -1)
        low, high = float(rgb.min()), float(rgb.max())
        rgb = (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    rgb = np.nan_to_num(rgb, nan=0.0)
    pixels = (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(target, Image.Resampling.BILINEAR)


def preview_png_base64(latents, size: int = 64) -> str:
    """`latent_preview` as base64 PNG (no data: prefix), as A1111's progress API sends it."""
    buffer = io.BytesIO()
    latent_preview(latents, size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
