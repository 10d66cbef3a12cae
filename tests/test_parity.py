"""Parity: our pipelines give diffusers' reference pipelines' images for the same
components, seed and scheduler (tiny random SD 1.x- and SDXL-shaped models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from limner.diffusion.samplers import make_scheduler, resolve_sampler
from limner.pipelines import latent
from limner.pipelines.steps import to_unit_range
from tiny_models import bundle, make_image, make_mask, sd1_components, sdxl_components

PROMPT, NEGATIVE = "a photo of an astronaut riding a horse", "blurry, ugly"
# Same arithmetic, but oneDNN picks fp32 kernels by CPU model, and their summation order
# differs: 0.0 on one Xeon, 1.05e-5 on another (SDXL inpaint, Euler). 1e-4 is still 40x
# below one 8-bit level, and any semantic difference (a wrong sigma, mask or order) is
# orders of magnitude larger.
TOLERANCE = 1e-4

# Deterministic samplers for every mode; ancestral ones where diffusers draws random
# numbers in the same order as we do (txt2img, img2img).
DETERMINISTIC = ["Euler", "DPM++ 2M", "DDIM", "UniPC"]
STOCHASTIC = ["Euler a", "DPM++ 2M SDE"]


def _components(arch, tmp_path, in_channels=4):
    if arch == "sd1":
        return sd1_components(tmp_path, in_channels=in_channels)
    return sdxl_components(tmp_path)


def _reference(arch, mode, components, scheduler):
    parts = {k: v for k, v in components.items() if k != "scheduler"}
    parts["scheduler"] = scheduler
    classes = {
        ("sd1", "txt2img"): StableDiffusionPipeline,
        ("sd1", "img2img"): StableDiffusionImg2ImgPipeline,
        ("sd1", "inpaint"): StableDiffusionInpaintPipeline,
        ("sdxl", "txt2img"): StableDiffusionXLPipeline,
        ("sdxl", "img2img"): StableDiffusionXLImg2ImgPipeline,
        ("sdxl", "inpaint"): StableDiffusionXLInpaintPipeline,
    }
    if arch == "sd1":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = classes[arch, mode](**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run_both(arch, mode, sampler, tmp_path, *, seed=7, strength=0.6, in_channels=4, steps=5):
    components = _components(arch, tmp_path, in_channels)
    model = bundle(components)
    image, mask = make_image(), make_mask()
    s = latent.Sampling(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        width=64,
        height=64,
        sampler=sampler,
        steps=steps,
        guidance_scale=6.5,
        strength=strength if mode != "txt2img" else 1.0,
    )
    if mode == "txt2img":
        ours = latent.txt2img(model, s, [seed])
    elif mode == "img2img":
        ours = latent.img2img(model, s, [seed], image)
    else:
        ours = latent.inpaint(model, s, [seed], image, mask)
    scheduler = make_scheduler(resolve_sampler(sampler), model.scheduler_config)
    pipe = _reference(arch, mode, components, scheduler)
    kwargs = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=steps,
        guidance_scale=6.5,
        generator=[torch.Generator().manual_seed(seed)],
        output_type="np",
        # diffusers' pipelines pass eta 0 to any step that takes one; ours default to the
        # sampler's own (Euler a: 1, the full ancestral step diffusers always takes)
        eta=resolve_sampler(sampler).spec.eta or 0.0,
    )
    if mode == "txt2img":
        kwargs.update(height=64, width=64)
    if mode in ("img2img", "inpaint"):
        kwargs.update(image=image, strength=s.strength)
    if mode == "inpaint":
        kwargs.update(mask_image=mask, height=64, width=64)
    reference = pipe(**kwargs).images
    return to_unit_range(ours), reference


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_matches_diffusers_deterministic_samplers(arch, mode, sampler, tmp_path):
    ours, reference = _run_both(arch, mode, sampler, tmp_path)
    assert ours.shape == reference.shape
    assert ours.std() > 0.01  # a real picture, not a constant
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_matches_diffusers_stochastic_samplers(arch, mode, sampler, tmp_path):
    ours, reference = _run_both(arch, mode, sampler, tmp_path)
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_native_inpainting_unet_matches_diffusers(strength, tmp_path):
    ours, reference = _run_both(
        "sd1", "inpaint", "Euler", tmp_path, in_channels=9, strength=strength
    )
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0)


def test_different_seeds_give_different_images(tmp_path):
    model = bundle(sd1_components(tmp_path))
    s = latent.Sampling(
        prompt=PROMPT, negative_prompt="", width=64, height=64, sampler="Euler", steps=3
    )
    a, b = latent.txt2img(model, s, [1]), latent.txt2img(model, s, [2])
    assert (a - b).abs().max() > 1e-2


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "DPM++ SDE Karras"])
def test_image_depends_on_its_own_seed_not_its_batch(sampler, tmp_path):
    """A1111 semantics: the second image of a batch seeded 10 is the image of seed 11."""
    model = bundle(sd1_components(tmp_path))
    s = latent.Sampling(
        prompt=PROMPT, negative_prompt=NEGATIVE, width=64, height=64, sampler=sampler, steps=4
    )
    batch = latent.txt2img(model, s, [10, 11])
    single = latent.txt2img(model, s, [11])
    # Batched and single UNet calls may round differently in the last bits.
    torch.testing.assert_close(batch[1:], single, atol=1e-4, rtol=0)
    assert (batch[0] - batch[1]).abs().max() > 1e-2


def test_brownian_tree_sampler_is_reproducible_from_the_seed(tmp_path):
    """DPM++ SDE draws its noise from Brownian trees: they must come from the image's
    seed, not from torch's global random state."""
    model = bundle(sd1_components(tmp_path))
    s = latent.Sampling(
        prompt=PROMPT, negative_prompt="", width=64, height=64, sampler="DPM++ SDE", steps=4
    )
    torch.manual_seed(1)
    first = latent.txt2img(model, s, [7])
    torch.manual_seed(2)
    second = latent.txt2img(model, s, [7])
    assert torch.equal(first, second)
