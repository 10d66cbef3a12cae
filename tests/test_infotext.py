"""A1111 infotext: formatting, parsing, and real strings as the web UI writes them."""

from __future__ import annotations

import json

import pytest

from limner.errors import InvalidRequestError
from limner.infotext import (
    A1111_KEY_ORDER,
    a1111_params,
    format_infotext,
    format_value,
    parse_infotext,
)

# --- real infotexts --------------------------------------------------------------

# The example in the docstring of parse_generation_parameters,
# AUTOMATIC1111/stable-diffusion-webui, modules/infotext_utils.py (pre-2023 output:
# 8-digit legacy "Model hash", no "Schedule type").
A1111_DOCSTRING = (
    "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, "
    "heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), "
    "detailed, intricate\n"
    "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, "
    "disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), "
    "(poorly drawn hands), messy drawing\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, "
    "Model hash: 45dee52b"
)

# Parameter line pasted in https://github.com/Mikubill/sd-webui-controlnet/issues/1966
# (A1111 1.5 with ControlNet v1.1.311): an extension value quoted because it holds
# commas and colons.
CONTROLNET_LINE = (
    "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 2716774486, Size: 384x512, "
    "Model hash: e4b17ce185, Model: anything-v4.5-pruned, "
    'ControlNet 0: "Module: lineart_anime_denoise, Model: control_v11p_sd15_lineart '
    "[43d4be0d], Weight: 1, Resize Mode: Crop and Resize, Low Vram: False, "
    "Processor Res: 512, Guidance Start: 0, Guidance End: 1, Pixel Perfect: True, "
    'Control Mode: Balanced"'
)

# Prompt and negative prompt from https://github.com/AUTOMATIC1111/stable-diffusion-webui/issues/14545
# (A1111 1.7, LoRA tags and attention weights in the prompt); the issue's parameter
# line is cut off there after "VAE:", so it is kept here only up to "Model: OilTeaRev".
ISSUE_14545 = (
    "[artwork|painting] of girl, (standing), (otaku room, books, game console:1.19), "
    "evening, perspective, brunette, freckles, full shot, (noir:0.8), high detail, "
    "highres, 16K, <lora:Colorwater_v4:0.15>, <lora:sharpen-soften:-0.2>, "
    "<lora:add_detail:0.27>\n"
    "Negative prompt: (low quality, worst quality), overexposure, normal quality, "
    "grayscale, cropped, text, signature, username, missing fingers, deformed, "
    "bad anatomy, bad_eyes, ugly, sketches, (over saturated), KHFB, badhandv4, "
    "EasyNegativeV2, bad_prompt_version2\n"
    "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 20, Seed: 1198099675, "
    "Size: 512x768, Model: OilTeaRev"
)

# Two inpainting parameter lines written by A1111 v1.9.4 (with "Schedule type"),
# quoted in the README of a public "Product Photo-shoot Engine" project found by
# code search.
V194_INPAINT_EULER = (
    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, "
    "Seed: 3001968073, Size: 985x1266, Model hash: b513c6287d, Model: realism_engine, "
    "Denoising strength: 0.75, Mask blur: 2, Version: v1.9.4"
)
V194_INPAINT_DPM = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 8, "
    "Seed: 1659960289, Size: 985x1266, Model hash: b513c6287d, Model: realism_engine, "
    "Denoising strength: 0.91, Masked content: fill, Version: v1.9.4"
)


def test_parses_a1111_docstring_example() -> None:
    prompt, negative, params = parse_infotext(A1111_DOCSTRING)
    assert prompt.startswith("girl with an artist's beret")
    assert prompt.endswith("detailed, intricate")
    assert negative.startswith("ugly, fat, obese")
    assert negative.endswith("messy drawing")
    assert params == {
        "Steps": "20",
        "Sampler": "Euler a",
        "CFG scale": "7",
        "Seed": "965400086",
        "Size": "512x512",
        "Size-1": "512",
        "Size-2": "512",
        "Model hash": "45dee52b",
    }


def test_parses_quoted_extension_value() -> None:
    prompt, negative, params = parse_infotext("a castle\n" + CONTROLNET_LINE)
    assert (prompt, negative) == ("a castle", "")
    assert params["Model"] == "anything-v4.5-pruned"
    assert params["ControlNet 0"] == (
        "Module: lineart_anime_denoise, Model: control_v11p_sd15_lineart [43d4be0d], "
        "Weight: 1, Resize Mode: Crop and Resize, Low Vram: False, Processor Res: 512, "
        "Guidance Start: 0, Guidance End: 1, Pixel Perfect: True, Control Mode: Balanced"
    )


def test_writes_quoted_extension_value_as_a1111_did() -> None:
    _, _, params = parse_infotext("a castle\n" + CONTROLNET_LINE)
    ordered = {k: v for k, v in params.items() if not k.startswith("Size-")}
    assert format_infotext("a castle", "", ordered) == "a castle\n" + CONTROLNET_LINE


def test_parses_prompt_with_lora_tags_and_colons() -> None:
    prompt, negative, params = parse_infotext(ISSUE_14545)
    assert "(otaku room, books, game console:1.19)" in prompt
    assert prompt.endswith("<lora:add_detail:0.27>")
    assert negative.startswith("(low quality, worst quality)")
    assert params["Sampler"] == "DPM++ 2M Karras"
    assert params["Model"] == "OilTeaRev"
    assert format_infotext(prompt, negative, _without_split_sizes(params)) == ISSUE_14545


@pytest.mark.parametrize("line", [V194_INPAINT_EULER, V194_INPAINT_DPM])
def test_real_v194_lines_round_trip(line: str) -> None:
    prompt, negative, params = parse_infotext("a bottle\nNegative prompt: blur\n" + line)
    assert (prompt, negative) == ("a bottle", "blur")
    assert format_infotext(prompt, negative, _without_split_sizes(params)).endswith("\n" + line)


def test_a1111_params_reproduces_real_inpaint_lines() -> None:
    common = dict(steps=20, size=(985, 1266), model_hash="b513c6287d", model="realism_engine")
    euler = a1111_params(
        sampler="Euler a",
        cfg_scale=7.0,
        seed=3001968073,
        denoising_strength=0.75,
        mask_blur=2,
        version="v1.9.4",
        **common,
    )
    dpm = a1111_params(
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=8,
        seed=1659960289,
        denoising_strength=0.91,
        extra={"Masked content": "fill"},
        version="v1.9.4",
        **common,
    )
    assert format_infotext("p", "", euler) == "p\n" + V194_INPAINT_EULER
    assert format_infotext("p", "", dpm) == "p\n" + V194_INPAINT_DPM


def _without_split_sizes(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if not (k.endswith("-1") or k.endswith("-2"))}


# --- format_infotext ----------------------------------------------------------------


def test_txt2img_layout() -> None:
    params = a1111_params(
        steps=20,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=7.0,
        seed=1234,
        size=(512, 768),
        model_hash="6ce0161689",
        model="v1-5-pruned-emaonly",
        version="v1.10.1",
    )
    assert format_infotext("a red fox", "blurry", params) == (
        "a red fox\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )


def test_empty_negative_prompt_line_is_omitted() -> None:
    text = format_infotext("a red fox", "", {"Steps": 20, "Sampler": "Euler", "Seed": 1})
    assert text == "a red fox\nSteps: 20, Sampler: Euler, Seed: 1"


def test_empty_prompt_keeps_negative_prompt() -> None:
    text = format_infotext("", "blurry", {"Steps": 20, "Sampler": "Euler", "Seed": 1})
    assert text == "Negative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 1"
    assert parse_infotext(text)[:2] == ("", "blurry")


def test_none_values_are_dropped_and_order_kept() -> None:
    params = {"Seed": 5, "Steps": 10, "VAE": None, "Sampler": "Euler"}
    assert format_infotext("x", "", params) == "x\nSeed: 5, Steps: 10, Sampler: Euler"


def test_value_equal_to_key_is_written_bare() -> None:
    text = format_infotext("x", "", {"Steps": 1, "Hypertile": "Hypertile", "Seed": 2})
    assert text.endswith("Steps: 1, Hypertile, Seed: 2")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (7, "7"),
        (7.0, "7"),
        (7.5, "7.5"),
        (0.75, "0.75"),
        (1.0, "1"),
        (0.3, "0.3"),
        (True, "True"),
        (1234567890123, "1234567890123"),
        ("Euler a", "Euler a"),
    ],
)
def test_number_formatting(value: object, written: str) -> None:
    assert format_value(value) == written


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("a, b", '"a, b"'),
        ("a: b", '"a: b"'),
        ("line1\nline2", '"line1\\nline2"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("日本語, テスト", '"日本語, テスト"'),  # ensure_ascii=False, as A1111
        ("plain value", "plain value"),
    ],
)
def test_quoting(value: str, written: str) -> None:
    text = format_infotext("x", "", {"Steps": 1, "Sampler": "Euler", "Note": value})
    assert text.endswith(f"Note: {written}")
    assert parse_infotext(text)[2]["Note"] == value


def test_a1111_params_order_matches_create_infotext() -> None:
    params = a1111_params(
        steps=30,
        sampler="Euler a",
        schedule_type="Automatic",
        cfg_scale=7,
        image_cfg_scale=1.5,
        seed=1,
        face_restoration="CodeFormer",
        size=(512, 512),
        model_hash="6ce0161689",
        model="v1-5-pruned-emaonly",
        vae_hash="735e4c3a44",
        vae="vae-ft-mse-840000-ema-pruned.safetensors",
        variation_seed=99,
        variation_seed_strength=0.3,
        seed_resize_from=(640, 640),
        denoising_strength=0.5,
        conditional_mask_weight=1.0,
        clip_skip=2,
        ensd=31337,
        token_merging_ratio=0.5,
        init_image_hash="abc",
        rng="CPU",
        tiling=True,
        mask_blur=4,
        extra={"Hires upscale": 2, "Lora hashes": "detail: 0123456789ab"},
        eta=0.67,
        eta_ddim=0.1,
        version="v1.10.1",
        user="me",
    )
    fixed = [key for key in params if key in A1111_KEY_ORDER]
    assert fixed == sorted(fixed, key=A1111_KEY_ORDER.index)
    assert list(params)[-8:] == [
        "Tiling",
        "Mask blur",
        "Hires upscale",
        "Lora hashes",
        "Eta",
        "Eta DDIM",
        "Version",
        "User",
    ]
    assert params["Seed resize from"] == "640x640"
    assert params["RNG"] == "CPU"
    assert params["Tiling"] == "True"


def test_a1111_params_omits_defaults_as_a1111_does() -> None:
    params = a1111_params(
        steps=20,
        sampler="Euler a",
        cfg_scale=7,
        seed=1,
        size=(512, 512),
        clip_skip=1,
        ensd=0,
        variation_seed=5,
        variation_seed_strength=0,
        seed_resize_from=(0, 0),
        rng="GPU",
        eta=1.0,
        eta_ddim=0.0,
        token_merging_ratio=0,
    )
    assert list(params) == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size"]


def test_a1111_params_extra_replaces_fixed_key_in_place() -> None:
    params = a1111_params(
        steps=20,
        sampler="Euler",
        cfg_scale=7,
        seed=1,
        size=(64, 64),
        model="m",
        extra={"Denoising strength": 0.4, "Hires upscale": 2},
    )
    assert list(params) == [
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model",
        "Denoising strength",
        "Hires upscale",
    ]


@pytest.mark.parametrize("key", ["x", "a:b", "a,b", "", "Ünïcode ok?"])
def test_unreadable_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidRequestError):
        format_infotext("x", "", {"Steps": 1, key: "v"})


# --- parse_infotext -----------------------------------------------------------------


def test_last_line_with_fewer_than_three_params_is_prompt() -> None:
    prompt, negative, params = parse_infotext("a cat\nstyle: photo, mood: calm")
    assert prompt == "a cat\nstyle: photo, mood: calm"
    assert (negative, params) == ("", {})


def test_prompt_only() -> None:
    assert parse_infotext("  just a prompt \n") == ("just a prompt", "", {})


def test_windows_line_endings() -> None:
    text = "a cat\r\nNegative prompt: dog\r\nSteps: 20, Sampler: Euler, Seed: 3\r\n"
    assert parse_infotext(text) == (
        "a cat",
        "dog",
        {"Steps": "20", "Sampler": "Euler", "Seed": "3"},
    )


def test_other_sizes_are_split_too() -> None:
    _, _, params = parse_infotext(
        "x\nSteps: 1, Sampler: Euler, Seed resize from: 640x480, Hires resize: 1024x768"
    )
    assert params["Seed resize from-1"] == "640"
    assert params["Seed resize from-2"] == "480"
    assert params["Hires resize-1"] == "1024"


ROUND_TRIP_PROMPTS = [
    ("a cat, sitting on a mat", "blurry, lowres"),
    ("portrait: 35mm, f/1.8", "watermark: text"),
    ("first line\nsecond line, with comma\nthird: with colon", ""),
    ('a sign that says "OPEN", neon', 'the word "closed"'),
    ("(masterpiece:1.2), <lora:detail:0.5>", "(worst quality:1.4)"),
    ("a café in Köln, 夜景", "ぼやけた, 低品質"),
    ("one", "neg line one,\nneg line two: colon\nneg line three"),
    ("", "only negative"),
    ("Steps in the prompt: 3, Sampler: no, Seed: no", ""),
]


@pytest.mark.parametrize(("prompt", "negative"), ROUND_TRIP_PROMPTS)
def test_round_trip_prompts(prompt: str, negative: str) -> None:
    params = a1111_params(
        steps=20,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=6.5,
        seed=4294967295,
        size=(512, 768),
        model_hash="6ce0161689",
        model="v1-5-pruned-emaonly",
        extra={"Lora hashes": "detail: 0123456789ab, style: ba9876543210"},
        version="limner 0.1.0",
    )
    text = format_infotext(prompt, negative, params)
    got_prompt, got_negative, got = parse_infotext(text)
    assert (got_prompt, got_negative) == (prompt, negative)
    assert _without_split_sizes(got) == {k: format_value(v) for k, v in params.items()}
    assert (got["Size-1"], got["Size-2"]) == ("512", "768")


@pytest.mark.parametrize(
    "value",
    [
        "a, b",
        "a: b",
        "multi\nline",
        '"already quoted"',
        'he said "hi", then left',
        "back\\slash, here",
        "ünïcödé: ✓",
        "{'json': 'like', \"x\": [1, 2]}",
    ],
)
def test_round_trip_values(value: str) -> None:
    params = {"Steps": 20, "Sampler": "Euler", "Custom value": value, "Seed": 1}
    _, _, got = parse_infotext(format_infotext("p", "", params))
    assert got["Custom value"] == value
    assert got["Seed"] == "1"


def test_quoted_value_is_valid_json_as_a1111_expects() -> None:
    text = format_infotext("p", "", {"Steps": 1, "Sampler": "E", "Hashes": '{"model": "abc"}'})
    raw = text.split("Hashes: ", 1)[1]
    assert json.loads(raw) == '{"model": "abc"}'
