"""Classifier-free guidance around a conditional UNet (Ho & Salimans 2022, arXiv:2207.12598)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class UNetConditioning:
    """Everything besides the latents that the UNet is called with, for a batch of B.

    With guidance the tensors hold 2B rows: the negative (unconditional) half first,
    then the positive half, matching diffusers' ordering.
    """

    encoder_hidden_states: torch.Tensor  # (B or 2B, T, D)
    added_cond_kwargs: dict[str, torch.Tensor] | None = None  # SDXL: text_embeds, time_ids
    timestep_cond: torch.Tensor | None = None  # LCM-distilled UNets: guidance embedding
    extra_channels: torch.Tensor | None = None  # 9-channel inpainting: mask + masked latents


def rescale_guidance(guided: torch.Tensor, positive: torch.Tensor, factor: float) -> torch.Tensor:
    """Guidance rescale of Lin et al. 2023 (arXiv:2305.08891, sec. 3.4): match the std of
    the positive prediction to undo over-exposure, mixed by `factor`."""
    dims = list(range(1, positive.ndim))
    std_pos = positive.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_pos / std_guided)
    return factor * rescaled + (1 - factor) * guided


class GuidedUNet:
    """A denoiser `(x, t) -> model output` that applies classifier-free guidance."""

    def __init__(
        self,
        unet: torch.nn.Module,
        conditioning: UNetConditioning,
        guidance_scale: float,
        guidance_rescale: float = 0.0,
    ) -> None:
        self.unet = unet
        self.cond = conditioning
        self.guidance_scale = guidance_scale
        self.guidance_rescale = guidance_rescale

    @property
    def do_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_in = torch.cat([x] * 2) if self.do_guidance else x  # (2B, C, h, w)
        if self.cond.extra_channels is not None:
            x_in = torch.cat([x_in, self.cond.extra_channels], dim=1)
        out = self.unet(
            x_in,
            t,
            encoder_hidden_states=self.cond.encoder_hidden_states,
            timestep_cond=self.cond.timestep_cond,
            added_cond_kwargs=self.cond.added_cond_kwargs,
            return_dict=False,
        )[0]
        if not self.do_guidance:
            return out
        negative, positive = out.chunk(2)
        guided = negative + self.guidance_scale * (positive - negative)
        if self.guidance_rescale > 0:
            guided = rescale_guidance(guided, positive, self.guidance_rescale)
        return guided
