"""Tiny random components shaped like SD 1.x, SDXL and the built-in model, for fast tests.

The tokenizer is a real CLIP BPE tokenizer over a character-level vocabulary (the 256
byte symbols, with and without the end-of-word mark, and no merges), so every code path
of the real one runs, with a vocabulary small enough for a 32-wide text encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from limner.models.loading import bundle_from_components

SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_clip_tokenizer(folder: Path, *, pad: str = "<|endoftext|>") -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab_list)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "pad_token": pad})
    )
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _text_config(tokenizer, hidden: int, projection: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=1000,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )


def sd1_components(
    tmp: Path, *, in_channels: int = 4, seed: int = 0, time_cond_proj_dim: int | None = None
) -> dict:
    """`time_cond_proj_dim`: a guidance-distilled (LCM) UNet that embeds the guidance scale."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    vae = tiny_vae()
    tokenizer = tiny_clip_tokenizer(tmp / "tokenizer")
    text_encoder = CLIPTextModel(_text_config(tokenizer, 32))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": dict(SCHEDULER_CONFIG),
    }


def sdxl_components(tmp: Path, *, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled
        cross_attention_dim=64,  # 32 + 32 from the two encoders
        norm_num_groups=32,
    )
    vae = tiny_vae()
    tokenizer = tiny_clip_tokenizer(tmp / "tokenizer")
    tokenizer_2 = tiny_clip_tokenizer(tmp / "tokenizer_2", pad="!")
    text_encoder = CLIPTextModel(_text_config(tokenizer, 32))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, 32, projection=32))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer_2": tokenizer_2,
        "scheduler": dict(SCHEDULER_CONFIG),
    }


def bundle(components: dict, name: str = "tiny"):
    return bundle_from_components(components, name=name)


def make_image(size: int = 64, seed: int = 3) -> Image.Image:
    """A deterministic picture: a colour gradient with a few rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    array = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1).astype(
        np.uint8
    )
    for _ in range(3):
        x0, y0 = rng.integers(0, size // 2, 2)
        array[y0 : y0 + size // 4, x0 : x0 + size // 4] = rng.integers(0, 255, 3)
    return Image.fromarray(array)


def make_mask(size: int = 64) -> Image.Image:
    array = np.zeros((size, size), dtype=np.uint8)
    array[size // 4 : size * 3 // 4, size // 8 : size // 2] = 255
    return Image.fromarray(array)
