"""`limner.api` on tiny models: every sampler, prompts, progress, and the pixels that
inpainting and outpainting must leave alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import distance_transform_edt

from limner import api
from limner.api import Cancelled, GenerationRequest, Outpaint
from limner.diffusion.samplers import SAMPLERS
from limner.errors import InvalidRequestError, LimnerError
from limner.models.loading import bundle_from_components
from limner.pngmeta import encode_png
from tiny_models import make_image, make_mask, sd1_components

PROMPT = "a red apple on a wooden table"
# Two chunks: A1111's BREAK ends the first one early; together > 77 tokens (the tiny
# tokenizer has one token per character), each part under 75.
FIRST = "a (red:1.3) apple, [dull] table, (soft light:0.8)"
SECOND = "a quiet harbour at dawn with small wooden boats and gulls over the grey sea"
LONG = f"{FIRST} BREAK {SECOND}"
LONG_UNWEIGHTED = f"a red apple, dull table, soft light BREAK {SECOND}"


def req(model: str, **fields) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "model": model, "steps": 3, "seed": 11, **fields})


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


@pytest.fixture
def input_image(tmp_path: Path) -> tuple[Image.Image, Path]:
    image = make_image(64)
    path = tmp_path / "input.png"
    image.save(path)
    return image, path


# -- samplers --------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_makes_an_image(sampler, tiny_sd1):
    latents: list[torch.Tensor] = []
    [result] = api.generate(
        req(tiny_sd1, sampler=sampler),
        on_progress=lambda p: latents.append(p.step.latents),
    )
    assert latents, "no step ran"
    assert torch.isfinite(latents[-1]).all()
    assert latents[-1].abs().max() > 0
    pixels = array(result.image)
    assert pixels.shape == (64, 64, 3)
    assert pixels.std() > 2.0, "a constant image"
    assert f"Sampler: {sampler}," in result.infotext


def test_samplers_differ(tiny_sd1):
    images = [
        array(api.generate(req(tiny_sd1, sampler=name))[0].image)
        for name in ("Euler", "Euler a", "DDIM")
    ]
    assert not np.array_equal(images[0], images[1])
    assert not np.array_equal(images[0], images[2])


def _lcm_model(tmp_path: Path):
    """The tiny SD 1.x model with a guidance-distilled (LCM) UNet: it takes the guidance
    scale as an embedding (time_cond_proj_dim)."""
    components = sd1_components(tmp_path, seed=1, time_cond_proj_dim=32)
    return bundle_from_components(components, name="tiny-lcm")


def test_lcm_run_on_distilled_unet(tmp_path):
    model = _lcm_model(tmp_path)
    seen: list[torch.Tensor | None] = []

    def record(module, args, kwargs):
        seen.append(kwargs.get("timestep_cond"))

    handle = model.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        results = {
            scale: api.generate(
                GenerationRequest(
                    prompt=PROMPT, sampler="LCM", steps=4, guidance_scale=scale, seed=3
                ),
                model=model,
            )[0]
            for scale in (1.0, 1.5)
        }
    finally:
        handle.remove()
    assert len(seen) == 8
    assert all(cond is not None and cond.shape[-1] == 32 for cond in seen)
    for result in results.values():
        assert array(result.image).std() > 2.0
        assert "Sampler: LCM," in result.infotext
    # The guidance scale reaches the UNet as an embedding: the images differ.
    assert not np.array_equal(array(results[1.0].image), array(results[1.5].image))


# -- determinism -----------------------------------------------------------------------


def test_same_request_same_bytes(tiny_sd1):
    first, second = (api.generate(req(tiny_sd1, sampler="Euler a"))[0] for _ in range(2))
    as_png = [
        encode_png(r.image, parameters=r.infotext, request_json=r.request_json())
        for r in (first, second)
    ]
    assert as_png[0] == as_png[1]
    other = api.generate(req(tiny_sd1, sampler="Euler a", seed=12))[0]
    assert not np.array_equal(array(other.image), array(first.image))


def test_random_seed_is_recorded(tiny_sd1):
    [result] = api.generate(req(tiny_sd1, seed=None))
    assert 0 <= result.seed <= 2**32 - 1
    assert result.request.seed == result.seed
    assert f"Seed: {result.seed}," in result.infotext


def test_eta_zero_turns_euler_a_into_euler(tiny_sd1):
    """Euler a with no ancestral noise is the Euler step, from the same initial noise."""
    [plain] = api.generate(req(tiny_sd1, sampler="Euler"))
    [no_noise] = api.generate(req(tiny_sd1, sampler="Euler a", eta=0.0))
    [default] = api.generate(req(tiny_sd1, sampler="Euler a"))
    [half] = api.generate(req(tiny_sd1, sampler="Euler a", eta=0.5))
    assert np.abs(array(no_noise.image) - array(plain.image)).max() <= 1
    assert np.abs(array(half.image) - array(no_noise.image)).max() > 8
    assert np.abs(array(half.image) - array(default.image)).max() > 8
    # A1111 writes Eta only when it differs from the ancestral default, 1
    assert "Eta: 0.5," in half.infotext
    assert "Eta" not in default.infotext


def test_eta_is_refused_by_samplers_that_take_none(tiny_sd1):
    with pytest.raises(InvalidRequestError, match="takes no eta.*DDIM"):
        api.generate(req(tiny_sd1, sampler="UniPC", eta=0.3))


def test_request_as_dict_is_validated(tiny_sd1):
    with pytest.raises(InvalidRequestError, match="stepz"):
        api.generate({"prompt": PROMPT, "model": tiny_sd1, "stepz": 3})


# -- prompts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "width"), [("tiny_sd1", 32), ("tiny_sdxl", 64)])
def test_long_weighted_prompt(model, width, request):
    name = request.getfixturevalue(model)
    encoder = api.load(name).prompt_encoder
    tokens = encoder.encoders[0].tokenize
    assert len(tokens(FIRST)) + len(tokens(SECOND)) > 77
    assert len(tokens(FIRST)) <= 75 and len(tokens(SECOND)) <= 75

    weighted = encoder.encode(LONG)
    plain = encoder.encode(LONG_UNWEIGHTED)
    assert weighted.embeds.shape == plain.embeds.shape == (1, 154, width)
    assert not torch.allclose(weighted.embeds, plain.embeds, atol=1e-4)
    # BREAK: the second chunk is the second part alone, unaffected by the first's weights.
    alone = encoder.encode(SECOND)
    assert alone.embeds.shape == (1, 77, width)
    torch.testing.assert_close(weighted.embeds[:, 77:], alone.embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.embeds[:, 77:], alone.embeds, atol=1e-5, rtol=0)
    if model == "tiny_sdxl":
        assert weighted.pooled is not None and weighted.pooled.shape == (1, 32)

    [result] = api.generate(req(name, prompt=LONG, negative_prompt="blurry, (ugly:1.2)"))
    assert array(result.image).std() > 2.0
    assert result.infotext.startswith(LONG + "\n")


def test_clip_skip_changes_the_image(tiny_sd1):
    one = api.generate(req(tiny_sd1, clip_skip=1))[0]
    two = api.generate(req(tiny_sd1, clip_skip=2))[0]
    assert "Clip skip" not in one.infotext
    assert "Clip skip: 2," in two.infotext
    assert np.abs(array(one.image) - array(two.image)).max() > 0


# -- progress and cancelling -----------------------------------------------------------


@pytest.mark.parametrize(("sampler", "evaluations"), [("Euler", 3), ("Heun", 5)])
def test_progress_once_per_model_evaluation(sampler, evaluations, tiny_sd1):
    model = api.load(tiny_sd1)
    unet_calls: list[int] = []
    handle = model.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    events: list[api.Progress] = []
    try:
        api.generate(req(tiny_sd1, sampler=sampler, batch_count=2), on_progress=events.append)
    finally:
        handle.remove()
    assert len(events) == len(unet_calls) == 2 * evaluations
    assert [e.batch for e in events] == [0] * evaluations + [1] * evaluations
    for batch in (0, 1):
        steps = [e.step for e in events if e.batch == batch]
        assert [s.index for s in steps] == list(range(evaluations))
        assert all(s.total == evaluations for s in steps)
        assert [s.elapsed for s in steps] == sorted(s.elapsed for s in steps)
    assert all(e.batch_count == 2 for e in events)


def test_should_stop_cancels(tiny_sd1):
    events: list[api.Progress] = []
    with pytest.raises(Cancelled) as caught:
        api.generate(
            req(tiny_sd1, steps=6),
            on_progress=events.append,
            should_stop=lambda: len(events) >= 2,
        )
    assert isinstance(caught.value, LimnerError)  # the CLI reports it as one line
    assert len(events) == 2


def test_should_stop_before_first_step(tiny_sd1):
    model = api.load(tiny_sd1)
    unet_calls: list[int] = []
    handle = model.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    try:
        with pytest.raises(Cancelled):
            api.generate(req(tiny_sd1), should_stop=lambda: True)
    finally:
        handle.remove()
    assert unet_calls == []


# -- inpainting and outpainting keep what they must ------------------------------------


@pytest.mark.parametrize("blur", [0, 4])
def test_inpaint_keeps_pixels_far_from_mask(blur, tiny_sd1, input_image, tmp_path):
    image, path = input_image
    mask = make_mask(64)
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)
    fields = dict(mode="inpaint", init_image=str(path), mask=str(mask_path), mask_blur=blur)
    [kept] = api.generate(req(tiny_sd1, **fields))
    [free] = api.generate(req(tiny_sd1, keep_unmasked=False, **fields))

    white = np.asarray(mask) > 0
    far = distance_transform_edt(~white) > max(3 * blur, 1)
    assert far.sum() > 1000
    original, out = array(image), array(kept.image)
    np.testing.assert_array_equal(out[far], original[far])
    # Inside the mask the picture was repainted, and without keep_unmasked nothing is kept.
    assert np.abs(out[white] - original[white]).mean() > 5
    assert not np.array_equal(array(free.image)[far], original[far])
    assert f"Mask blur: {blur}," in kept.infotext


@pytest.mark.parametrize(
    "sides",
    [dict(left=16, down=8), dict(left=8, right=8, up=8, down=8), dict(up=24)],
    ids=["left-down", "all", "up"],
)
def test_outpaint_keeps_original_away_from_seam(sides, tiny_sd1, input_image):
    image, path = input_image
    blur = 4
    fields = dict(mode="outpaint", init_image=str(path), outpaint=Outpaint(**sides), strength=1.0)
    [kept] = api.generate(req(tiny_sd1, mask_blur=blur, **fields))
    [free] = api.generate(req(tiny_sd1, mask_blur=blur, keep_unmasked=False, **fields))
    left, right, up, down = (sides.get(k, 0) for k in ("left", "right", "up", "down"))
    assert kept.image.size == (64 + left + right, 64 + up + down)

    # Rows/columns of the original more than overlap + 3 * blur from a seam it gained.
    margin = api.OUTPAINT_OVERLAP + 3 * blur
    x0, x1 = (margin if left else 0), 64 - (margin if right else 0)
    y0, y1 = (margin if up else 0), 64 - (margin if down else 0)
    original = array(image)[y0:y1, x0:x1]
    out = array(kept.image)[up + y0 : up + y1, left + x0 : left + x1]
    np.testing.assert_array_equal(out, original)
    assert not np.array_equal(array(free.image)[up + y0 : up + y1, left + x0 : left + x1], original)
    # The added area is painted, not the stretched edge pixels it started from.
    canvas = np.pad(array(image), ((up, down), (left, right), (0, 0)), mode="edge")
    new = np.ones(canvas.shape[:2], dtype=bool)
    new[up : up + 64, left : left + 64] = False
    assert np.abs(array(kept.image)[new] - canvas[new]).mean() > 5


def test_img2img_strength_controls_change(tiny_sd1, input_image):
    image, path = input_image
    diffs = []
    for strength, written in ((0.4, "0.4"), (1.0, "1")):
        fields = dict(mode="img2img", init_image=str(path), strength=strength)
        [result] = api.generate(req(tiny_sd1, **fields))
        diffs.append(np.abs(array(result.image) - array(image)).mean())
        assert f"Denoising strength: {written}," in result.infotext
    assert diffs[0] < diffs[1]


# -- several requests at once ----------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_sd1", "tiny_sdxl"])
def test_generate_many_gives_each_request_its_own_image(model, request):
    name = request.getfixturevalue(model)
    requests = [
        req(name, prompt="a red apple", seed=1, sampler="Euler a"),
        req(name, prompt="a blue boat on the sea", seed=2, sampler="Euler a"),
        req(name, prompt="a red apple", seed=1, steps=4),  # other settings: own batch
        req(name, prompt=LONG, seed=3, sampler="Euler a"),  # two chunks: cannot join
        req(name, prompt="two of them", seed=4, batch_size=2),  # not one image: alone
        req(name, prompt="a green tree", seed=5, sampler="Euler a"),
    ]
    many = api.generate_many(requests, max_batch=3)
    alone = [api.generate(r) for r in requests]
    assert [len(images) for images in many] == [1, 1, 1, 1, 2, 1]
    for batched, single in zip(many, alone, strict=True):
        for b, s in zip(batched, single, strict=True):
            assert b.infotext == s.infotext and b.seed == s.seed
            assert np.abs(array(b.image) - array(s.image)).max() <= 2
    # Each from its own prompt: the two apples with different settings differ, and so
    # do the apple and the boat made in one batch.
    assert np.abs(array(many[0][0].image) - array(many[1][0].image)).max() > 10


def test_generate_many_refuses_bad_input_before_any_image(tiny_sd1):
    with pytest.raises(InvalidRequestError, match="max_batch"):
        api.generate_many([req(tiny_sd1)], max_batch=0)
    with pytest.raises(InvalidRequestError):
        api.generate_many([req(tiny_sd1), {"prompt": "x", "steps": -1}])


def test_a_batch_needs_one_prompt_or_one_per_image(tiny_sd1):
    from limner.pipelines.steps import encode_conditioning

    model = api.load(tiny_sd1)
    kwargs = dict(batch_size=3, width=64, height=64, guidance=True)
    with pytest.raises(InvalidRequestError, match="2 prompts for a batch of 3"):
        encode_conditioning(model, ["a", "b"], "", **kwargs)
    cond = encode_conditioning(model, ["a", "b", "c"], "", **kwargs)
    assert cond.encoder_hidden_states.shape[0] == 6  # three negatives, three positives
    with pytest.raises(InvalidRequestError, match="75-token chunks"):
        encode_conditioning(model, ["a", LONG, "c"], "", **kwargs)
