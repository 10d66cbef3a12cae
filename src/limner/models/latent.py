"""The latent diffusion model bundle: prompt encoder, UNet, VAE and noise schedule.

The bundle assumes no particular text encoder: SD 1.x/2.x use CLIP, SDXL two CLIPs plus
size conditioning, the built-in model a frozen MiniLM. Pipelines only see this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from limner.models.latent_rgb import LatentRGB
from limner.models.text import PromptEncoder


class Family(StrEnum):
    """Model families that share one conditioning scheme."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    BUILTIN = "builtin"  # limner's own: MiniLM-conditioned, 128x128


@dataclass
class LatentDiffusionModel:
    name: str
    family: Family
    prompt_encoder: PromptEncoder
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict
    source: Path | None = None
    sha256: str | None = None
    components: dict = field(default_factory=dict)  # diffusers-style names -> modules
    latent_rgb: LatentRGB | None = None  # latents -> RGB for previews (None: not known)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def is_inpainting(self) -> bool:
        """A 9-channel UNet: latents + mask + masked-image latents (SD inpainting models)."""
        return self.unet.config.in_channels == self.latent_channels * 2 + 1

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def default_size(self) -> int:
        sample = self.unet.config.sample_size
        sample = sample if isinstance(sample, int) else sample[0]
        return sample * self.vae_scale_factor

    @property
    def uses_size_conditioning(self) -> bool:
        """SDXL conditions the UNet on original size, crop and target size."""
        return self.unet.config.addition_embed_type == "text_time"

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def num_parameters(self) -> int:
        modules = [self.unet, self.vae] + [e.text_encoder for e in self.prompt_encoder.encoders]
        return sum(p.numel() for m in modules for p in m.parameters())
