"""txt2img, img2img and inpaint for any latent diffusion bundle.

Each pipeline reads top to bottom as numbered steps over the shared steps of
`limner.pipelines.steps`, and returns decoded pixels (B, 3, H, W) in [-1, 1] for the batch
whose per-image seeds it was given. Requests are validated before they get here; sizes
here are already resolved to multiples of the VAE factor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from limner.diffusion.guidance import GuidedUNet
from limner.diffusion.loop import StepEvent, denoise
from limner.diffusion.samplers import make_scheduler, resolve_sampler, step_kwargs
from limner.models.latent import LatentDiffusionModel
from limner.pipelines import steps
from limner.runtime.deepcache import DeepCacheUNet
from limner.runtime.device import DeepCacheOptions
from limner.runtime.token_merging import set_token_merging


@dataclass
class Sampling:
    """The sampling settings of one batch (taken from a validated request): one prompt
    for the whole batch, or one per image."""

    prompt: str | tuple[str, ...]
    negative_prompt: str
    width: int
    height: int
    sampler: str = "DPM++ 2M"
    schedule: str | None = None
    steps: int = 20
    guidance_scale: float = 7.0
    guidance_rescale: float = 0.0
    eta: float | None = None  # None: the sampler's default
    clip_skip: int = 1
    strength: float = 1.0


@dataclass
class Speed:
    """Speed settings of one run that change what is computed (see `limner.runtime`).

    `deepcache` reuses the UNet's deep features between steps; `tiny_decoder` (a TAESD
    `TinyDecoder`) decodes the final image instead of the VAE when given;
    `release_text_encoder` frees the text encoders' weights once the prompt is encoded;
    `token_merging` is the ToMe ratio of the full-resolution self-attentions.
    """

    deepcache: DeepCacheOptions | None = None
    tiny_decoder: torch.nn.Module | None = None
    release_text_encoder: bool = False
    token_merging: float = 0.0


@dataclass
class Hooks:
    """Optional observers of a run: a per-step callback and a stop check."""

    callback: Callable[[StepEvent], None] | None = None
    should_stop: Callable[[], bool] | None = None


def _prepare(model: LatentDiffusionModel, s: Sampling, seeds: list[int], speed: Speed):
    """Steps shared by every mode: the guided denoiser (prompt encoded) and the scheduler."""
    batch = len(seeds)
    # A guidance-distilled (LCM) UNet takes the scale as an embedding instead of a
    # second, unconditional pass.
    distilled = model.unet.config.time_cond_proj_dim is not None
    guidance = s.guidance_scale > 1.0 and not distilled
    cond = steps.encode_conditioning(
        model,
        s.prompt,
        s.negative_prompt,
        batch_size=batch,
        width=s.width,
        height=s.height,
        guidance=guidance,
        clip_skip=s.clip_skip,
        guidance_scale=s.guidance_scale,
    )
    if speed.release_text_encoder:
        steps.release_text_encoders(model)
    scheduler = make_scheduler(resolve_sampler(s.sampler, s.schedule), model.scheduler_config)
    if hasattr(scheduler, "noise_sampler_seed"):
        # A Brownian-tree sampler (DPM++ SDE) otherwise seeds its trees from torch's
        # global RNG: one tree per image, from that image's seed, keeps it reproducible
        # from its own seed whatever batch it was made in (as A1111 does).
        scheduler.noise_sampler_seed = list(seeds)
    _, _, latent_height, latent_width = steps.latent_shape(model, batch, s.width, s.height)
    # Set for every run, 0 included: a UNet merged before must not stay merged.
    set_token_merging(model.unet, speed.token_merging, latent_height, latent_width, seeds)
    unet = DeepCacheUNet(model.unet, speed.deepcache) if speed.deepcache else model.unet
    denoiser = GuidedUNet(unet, cond, s.guidance_scale if guidance else 1.0, s.guidance_rescale)
    return denoiser, scheduler


@torch.no_grad()
def txt2img(
    model: LatentDiffusionModel,
    s: Sampling,
    seeds: list[int],
    hooks: Hooks | None = None,
    speed: Speed | None = None,
) -> torch.Tensor:
    hooks, speed = hooks or Hooks(), speed or Speed()
    generators = steps.make_generators(seeds)
    # 1. encode the prompt, pick the scheduler
    denoiser, scheduler = _prepare(model, s, seeds, speed)
    # 2. timesteps
    scheduler.set_timesteps(s.steps)
    timesteps = scheduler.timesteps
    # 3. start from pure noise at the largest noise level
    shape = steps.latent_shape(model, len(seeds), s.width, s.height)
    latents = steps.draw_noise(shape, generators, model) * scheduler.init_noise_sigma
    # 4. denoise
    latents = denoise(
        denoiser,
        scheduler,
        latents,
        timesteps,
        step_kwargs=step_kwargs(scheduler, eta=s.eta, generator=generators),
        callback=hooks.callback,
        should_stop=hooks.should_stop,
    )
    # 5. decode
    return steps.decode_latents(model, latents, speed.tiny_decoder)


@torch.no_grad()
def img2img(
    model: LatentDiffusionModel,
    s: Sampling,
    seeds: list[int],
    image: Image.Image,
    hooks: Hooks | None = None,
    speed: Speed | None = None,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2021): noise the image's latents to the level `strength`
    selects, then denoise from there."""
    hooks, speed = hooks or Hooks(), speed or Speed()
    batch = len(seeds)
    generators = steps.make_generators(seeds)
    # 1. encode the prompt, pick the scheduler
    denoiser, scheduler = _prepare(model, s, seeds, speed)
    # 2. the last `strength` part of the schedule
    timesteps = steps.img2img_timesteps(scheduler, s.steps, s.strength)
    # 3. encode the image, one posterior sample per seed, and noise it
    pixels = steps.pil_to_tensor([image] * batch)
    image_latents = steps.encode_images(model, pixels, generators)
    noise = steps.draw_noise(image_latents.shape, generators, model)
    latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(batch))
    # 4. denoise
    latents = denoise(
        denoiser,
        scheduler,
        latents,
        timesteps,
        step_kwargs=step_kwargs(scheduler, eta=s.eta, generator=generators),
        callback=hooks.callback,
        should_stop=hooks.should_stop,
    )
    # 5. decode
    return steps.decode_latents(model, latents, speed.tiny_decoder)


@torch.no_grad()
def inpaint(
    model: LatentDiffusionModel,
    s: Sampling,
    seeds: list[int],
    image: Image.Image,
    mask: Image.Image,
    hooks: Hooks | None = None,
    speed: Speed | None = None,
) -> torch.Tensor:
    """Repaint the white part of `mask`.

    A 9-channel inpainting UNet sees the mask and the masked image's latents as extra
    input channels. Any other model inpaints by latent blending (as in RePaint, Lugmayr
    et al. 2022, without resampling): after each step the unmasked region is replaced by
    the image's latents noised to the next step's level.
    """
    hooks, speed = hooks or Hooks(), speed or Speed()
    batch = len(seeds)
    generators = steps.make_generators(seeds)
    native = model.is_inpainting
    # 1. encode the prompt, pick the scheduler
    denoiser, scheduler = _prepare(model, s, seeds, speed)
    # 2. timesteps: the tail that the strength selects (all of them at strength 1)
    timesteps = steps.img2img_timesteps(scheduler, s.steps, s.strength)
    # 3. masks: pixel mask (1, 1, H, W) binarised; latent mask at the latent size
    pixels = steps.pil_to_tensor([image] * batch)
    pixel_mask = steps.mask_to_tensor(mask)
    f = model.vae_scale_factor
    latent_mask = torch.nn.functional.interpolate(pixel_mask, size=(s.height // f, s.width // f))
    latent_mask = latent_mask.to(model.device, model.dtype).repeat(batch, 1, 1, 1)  # (B, 1, h, w)
    # 4. starting latents: pure noise at strength 1, else the noised image latents
    image_latents = None
    if not native or s.strength < 1.0:
        image_latents = steps.encode_images(model, pixels, generators)
    shape = steps.latent_shape(model, batch, s.width, s.height)
    noise = steps.draw_noise(shape, generators, model)
    if s.strength >= 1.0:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(batch))
    # 5. what the model is told about the known region
    after_step = None
    if native:
        masked = pixels * (pixel_mask < 0.5)
        masked_latents = steps.encode_images(model, masked, generators)
        extra = torch.cat([latent_mask, masked_latents], dim=1)  # (B, 1 + C, h, w)
        denoiser.cond.extra_channels = torch.cat([extra] * 2) if denoiser.do_guidance else extra
    else:

        def after_step(index: int, current: torch.Tensor) -> torch.Tensor:
            known = image_latents
            if index < len(timesteps) - 1:
                known = scheduler.add_noise(image_latents, noise, timesteps[index + 1 : index + 2])
            return (1 - latent_mask) * known + latent_mask * current

    # 6. denoise
    latents = denoise(
        denoiser,
        scheduler,
        latents,
        timesteps,
        step_kwargs=step_kwargs(scheduler, eta=s.eta, generator=generators),
        after_step=after_step,
        callback=hooks.callback,
        should_stop=hooks.should_stop,
    )
    # 7. decode
    return steps.decode_latents(model, latents, speed.tiny_decoder)
