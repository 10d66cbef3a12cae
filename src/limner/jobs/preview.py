"""A cheap preview of a generation in progress, from its latents, without the VAE.

The model's linear map from latent channels to RGB (`limner.models.latent_rgb`: A1111's
"Approx cheap" coefficients for Stable Diffusion latents, a fitted one for VAEs trained
here) approximates the VAE decoder well enough to see the composition form. Latents
without a map are shown as their first three channels, min-max normalised.
A few thousand multiply-adds at 64 px: cheap enough for every step.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from limner.models.latent_rgb import LatentRGB

__all__ = ["latent_preview", "preview_png_base64"]


def _first_sample(latents) -> np.ndarray:
    """The first latent of a batch as a float32 (C, h, w) array; takes torch or numpy."""
    if hasattr(latents, "detach"):  # a torch tensor; the jobs layer does not import torch
        latents = latents[:1].detach().float().cpu().numpy()
    array = np.asarray(latents, dtype=np.float32)
    return array[0] if array.ndim == 4 else array


def latent_preview(latents, size: int = 64, latent_rgb: LatentRGB | None = None) -> Image.Image:
    """An RGB image of the first latent in `latents` (B, C, h, w), longer side `size` px,
    through the model's `latent_rgb` map when it has one for this many channels."""
    x = _first_sample(latents)  # (C, h, w)
    if latent_rgb is not None and x.shape[0] == latent_rgb.channels:
        rgb = (latent_rgb.apply(x) + 1.0) / 2.0  # (h, w, 3)
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


def preview_png_base64(latents, size: int = 64, latent_rgb: LatentRGB | None = None) -> str:
    """`latent_preview` as base64 PNG (no data: prefix), as A1111's progress API sends it."""
    buffer = io.BytesIO()
    latent_preview(latents, size, latent_rgb).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
