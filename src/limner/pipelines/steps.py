"""The steps every latent diffusion pipeline shares, each a function.

Random numbers come from one CPU generator per image, seeded with that image's seed, so
an image depends on its own seed alone, whatever its batch (A1111's behaviour), and the
order in which a generator is drawn from (VAE sample, then noise, then sampler noise)
matches diffusers' pipelines, which keeps our images equal to theirs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from limner.diffusion.guidance import UNetConditioning
from limner.errors import InvalidRequestError
from limner.models.latent import LatentDiffusionModel


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def encode_conditioning(
    model: LatentDiffusionModel,
    prompt: str | Sequence[str],
    negative_prompt: str,
    *,
    batch_size: int,
    width: int,
    height: int,
    guidance: bool,
    clip_skip: int = 1,
    guidance_scale: float = 1.0,
) -> UNetConditioning:
    """Encode the prompt pair and build the UNet's conditioning for a batch: one prompt
    for every image, or one prompt per image (a sequence of `batch_size`, which must
    encode to one length: as many 75-token chunks each)."""
    encoder = model.prompt_encoder
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if len(prompts) not in (1, batch_size):
        raise InvalidRequestError(f"{len(prompts)} prompts for a batch of {batch_size}")

    def parts_of(text: str) -> list:
        if guidance:
            positive, negative = encoder.encode_pair(text, negative_prompt, clip_skip)
            return [negative, positive]
        return [encoder.encode(text, clip_skip)]

    per_image = [parts_of(p) for p in prompts] * (batch_size if len(prompts) == 1 else 1)
    if len({tuple(parts[0].embeds.shape) for parts in per_image}) > 1:
        raise InvalidRequestError("the prompts of one batch must have as many 75-token chunks")
    # Rows: every image's negative, then every image's positive (GuidedUNet's layout).
    rows = [parts[k] for k in range(len(per_image[0])) for parts in per_image]
    dtype = model.dtype
    hidden = torch.cat([r.embeds for r in rows]).to(model.device, dtype)
    added = None
    if model.uses_size_conditioning:
        # SDXL micro-conditioning (Podell et al. 2023, sec. 2.2): original size, crop
        # top-left, target size; we generate uncropped at the target size.
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype)
        pooled = torch.cat([r.pooled for r in rows]).to(model.device, dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(rows), 1).to(model.device)}
    timestep_cond = None
    if model.unet.config.time_cond_proj_dim is not None:
        timestep_cond = guidance_scale_embedding(
            torch.full((len(rows),), guidance_scale - 1.0), model.unet.config.time_cond_proj_dim
        ).to(model.device, dtype)
    return UNetConditioning(hidden, added, timestep_cond)


def release_text_encoders(model: LatentDiffusionModel) -> None:
    """Free the text encoders' weights (moved to the meta device) once the prompt is
    encoded, for machines short of memory; `text_encoders_released` tells a cache that
    the model must be loaded again before its next prompt."""
    for encoder in model.prompt_encoder.encoders:
        encoder.text_encoder.to("meta")


def text_encoders_released(model: LatentDiffusionModel) -> bool:
    return any(
        p.is_meta for e in model.prompt_encoder.encoders for p in e.text_encoder.parameters()
    )


def guidance_scale_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the guidance scale for guidance-distilled (LCM) UNets
    (Meng et al. 2023, arXiv:2210.03142): w (B,) -> (B, dim)."""
    w = w * 1000.0
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / (half - 1))
    )
    angles = w.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def latent_shape(
    model: LatentDiffusionModel, batch: int, width: int, height: int
) -> tuple[int, ...]:
    f = model.vae_scale_factor
    return (batch, model.latent_channels, height // f, width // f)


def draw_noise(shape: tuple[int, ...], generators: list[torch.Generator], model) -> torch.Tensor:
    """Gaussian noise, row i drawn from generator i."""
    return randn_tensor(shape, generator=generators, device=model.device, dtype=model.dtype)


def pil_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL RGB images -> (B, 3, H, W) in [-1, 1]."""
    arrays = np.stack([np.asarray(img.convert("RGB")).astype(np.float32) / 255.0 for img in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) * 2.0 - 1.0


def mask_to_tensor(mask: Image.Image) -> torch.Tensor:
    """A mask image -> (1, 1, H, W) of 0/1: white (>= 0.5) is repainted."""
    array = np.asarray(mask.convert("L")).astype(np.float32) / 255.0
    binary = (array >= 0.5).astype(np.float32)
    return torch.from_numpy(binary)[None, None]


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, rounding as diffusers does."""
    arrays = to_unit_range(images)
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arrays]


def to_unit_range(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) float32 numpy in [0, 1]."""
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()


@torch.no_grad()
def encode_images(
    model: LatentDiffusionModel, pixels: torch.Tensor, generators: list[torch.Generator]
) -> torch.Tensor:
    """(B, 3, H, W) pixels -> scaled latents, sampling the posterior with generator i."""
    vae = model.vae
    pixels = pixels.to(model.device, vae.dtype)
    rows = []
    for i, generator in enumerate(generators):
        posterior = vae.encode(pixels[i : i + 1]).latent_dist
        rows.append(posterior.sample(generator=generator))
    latents = torch.cat(rows)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).to(model.dtype)


# Above this many pixels the VAE decodes in overlapping tiles (diffusers' tiled decode):
# its mid-block attention over all latent positions grows with the square of the area.
TILING_PIXELS = 1024 * 1024


@torch.no_grad()
def decode_latents(
    model: LatentDiffusionModel, latents: torch.Tensor, tiny_decoder=None
) -> torch.Tensor:
    """Scaled latents -> (B, 3, H, W) pixels in about [-1, 1].

    With `tiny_decoder` (a TAESD-format `TinyDecoder`) the latents are decoded by it
    instead of the VAE. A VAE decode in bf16/fp16 that comes out NaN or infinite (the
    "black image" of half-precision VAEs) is done again in fp32, and the VAE stays in
    fp32 from then on.
    """
    if tiny_decoder is not None:
        return tiny_decoder(latents.to(tiny_decoder.dtype)).float()
    vae = model.vae
    f = model.vae_scale_factor
    if latents.shape[-1] * latents.shape[-2] * f * f > TILING_PIXELS:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    pixels = _vae_decode(vae, latents)
    if vae.dtype != torch.float32 and not torch.isfinite(pixels).all():
        warnings.warn(
            f"the VAE decoded non-finite values in {str(vae.dtype).removeprefix('torch.')}: "
            "decoding again in fp32 (and keeping the VAE in fp32)",
            stacklevel=2,
        )
        vae.to(torch.float32)
        pixels = _vae_decode(vae, latents)
    return pixels


def _vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = latents.to(vae.dtype) / vae.config.scaling_factor + shift
    return vae.decode(latents, return_dict=False)[0]


def img2img_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The tail of the schedule that denoising strength `strength` runs (SDEdit, Meng et
    al. 2021): the last int(steps * strength) steps."""
    scheduler.set_timesteps(steps)
    run_steps = min(int(steps * strength), steps)
    if run_steps < 1:
        raise InvalidRequestError(
            f"denoising strength {strength} with {steps} steps runs no step: "
            "raise the strength or the number of steps"
        )
    start = (steps - run_steps) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]
