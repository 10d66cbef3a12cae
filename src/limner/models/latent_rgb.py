"""A linear map from a VAE's latent channels to RGB: cheap previews of a run in progress.

Each latent space needs its own map. Stable Diffusion 1.x/2.x latents use the "Approx
cheap" coefficients of AUTOMATIC1111 (``modules/sd_vae_approx.py``, fitted by Keturn,
discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204/2); a VAE trained
here gets its own, fitted by least squares on its encodings of real images
(`fit_latent_rgb`) and stored next to its weights as ``latent_rgb.json``. The map reads the
*scaled* latents that the diffusion model samples and gives RGB in about [-1, 1].

numpy only: the jobs layer draws previews without importing torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limner.errors import ModelLoadError

FILE_NAME = "latent_rgb.json"


@dataclass(frozen=True)
class LatentRGB:
    """rgb = latents . weights + bias, per latent pixel; weights (C, 3), bias (3,)."""

    weights: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def channels(self) -> int:
        return len(self.weights)

    def apply(self, latent: np.ndarray) -> np.ndarray:
        """One latent (C, h, w) -> RGB (h, w, 3), about [-1, 1]."""
        w = np.asarray(self.weights, dtype=np.float32)
        return np.einsum("chw,cr->hwr", latent.astype(np.float32), w) + np.asarray(
            self.bias, dtype=np.float32
        )

    def to_json(self) -> dict:
        return {"weights": [list(row) for row in self.weights], "bias": list(self.bias)}

    @classmethod
    def from_json(cls, data: dict) -> LatentRGB:
        try:
            weights = tuple(tuple(float(v) for v in row) for row in data["weights"])
            bias = tuple(float(v) for v in data.get("bias", (0.0, 0.0, 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{FILE_NAME}: not a latent-to-RGB map ({e})") from e
        values = [v for row in weights for v in row] + list(bias)
        if not weights or any(len(row) != 3 for row in weights) or len(bias) != 3:
            raise ModelLoadError(f"{FILE_NAME}: weights must be (channels, 3) and bias (3,)")
        if not all(math.isfinite(v) for v in values):
            raise ModelLoadError(f"{FILE_NAME}: holds a value that is not finite")
        return cls(weights, bias)  # type: ignore[arg-type]


SD_LATENT_RGB = LatentRGB(
    weights=(
        (0.298, 0.207, 0.208),
        (0.187, 0.286, 0.173),
        (-0.158, 0.189, 0.264),
        (-0.184, -0.271, -0.473),
    )
)


def load_latent_rgb(vae_folder: str | Path) -> LatentRGB | None:
    """The map stored in a VAE folder, or None when it has none."""
    path = Path(vae_folder) / FILE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot be read as JSON ({e})") from e
    return LatentRGB.from_json(data)


def save_latent_rgb(rgb: LatentRGB, vae_folder: str | Path) -> Path:
    path = Path(vae_folder) / FILE_NAME
    path.write_text(json.dumps(rgb.to_json(), indent=1) + "\n")
    return path


def fit_latent_rgb(latents: np.ndarray, pixels: np.ndarray) -> LatentRGB:
    """Least-squares map from scaled latents (N, C, h, w) to the images they encode,
    downsampled to the latent size (N, 3, h, w) in [-1, 1]."""
    if latents.ndim != 4 or pixels.ndim != 4 or latents.shape[0] != pixels.shape[0]:
        raise ValueError("latents and pixels must be (N, C, h, w) and (N, 3, h, w)")
    if latents.shape[2:] != pixels.shape[2:] or pixels.shape[1] != 3:
        raise ValueError("pixels must have 3 channels at the latents' height and width")
    c = latents.shape[1]
    x = np.moveaxis(latents, 1, -1).reshape(-1, c).astype(np.float64)
    y = np.moveaxis(pixels, 1, -1).reshape(-1, 3).astype(np.float64)
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)  # (C + 1, 3)
    weights = tuple(tuple(round(float(v), 5) for v in row) for row in solution[:c])
    bias = tuple(round(float(v), 5) for v in solution[c])
    return LatentRGB(weights, bias)  # type: ignore[arg-type]
