"""Tiny random Stable Diffusion bundles with the real block layouts, for tests.

Each family keeps its real structure (number of levels, block types, attention placement,
transformer depths pattern, linear vs conv projections, text tower layouts) at toy widths,
so the key mapping is exercised exactly as for the full-size models, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .arch import ArchInfo
from .component_configs import default_component_configs, load_clip_tokenizer, tokenizer_pads

_TEXT_WIDTH = 32
# SDXL's two towers get different widths, as in the real model (768 vs 1280): loaders such as
# diffusers' tell the towers apart by width.
_TEXT2_WIDTH = 48


def _text_config(base: dict[str, Any], width: int, projection: bool) -> dict[str, Any]:
    return {
        **base,
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "projection_dim": width if projection else base.get("projection_dim", 32),
    }


def tiny_component_configs(arch: ArchInfo) -> dict[str, dict[str, Any]]:
    """Shipped configs of ``arch`` with small widths (same block structure)."""
    configs = default_component_configs(arch)
    levels = len(configs["unet"]["block_out_channels"])
    unet = configs["unet"]
    unet.update(
        block_out_channels=[16, 32, 32, 32][:levels],
        norm_num_groups=8,
        sample_size=8,
    )
    if arch.family == "sd1":
        unet.update(attention_head_dim=4, cross_attention_dim=_TEXT_WIDTH)
    elif arch.family == "sd2":
        unet.update(attention_head_dim=[2, 4, 4, 4], cross_attention_dim=_TEXT_WIDTH)
    else:
        unet.update(
            attention_head_dim=[2, 4, 4],
            transformer_layers_per_block=[1, 2, 2],
            # both towers' hidden states are concatenated; the pooled bigG output and six
            # size/crop numbers (8 features each) feed the added embedding
            cross_attention_dim=_TEXT_WIDTH + _TEXT2_WIDTH,
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + _TEXT2_WIDTH,
        )
    configs["vae"].update(block_out_channels=[8, 16, 16, 16], norm_num_groups=4, sample_size=32)
    configs["text_encoder"] = _text_config(configs["text_encoder"], _TEXT_WIDTH, projection=False)
    if "text_encoder_2" in configs:
        configs["text_encoder_2"] = _text_config(
            configs["text_encoder_2"], _TEXT2_WIDTH, projection=True
        )
    return configs


def randomize_(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Overwrite every parameter with N(0, 0.1) noise.

    Default initialisations leave many tensors at exactly 0 or 1 (biases, norms, zero-init
    output convs), which would hide a key mapping that swaps two of them.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


def build_tiny_components(arch: ArchInfo, seed: int = 0) -> dict[str, Any]:
    """Random tiny components of ``arch`` under diffusers pipeline names."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .component_configs import build_scheduler

    configs = tiny_component_configs(arch)
    generator = torch.Generator().manual_seed(seed)
    components: dict[str, Any] = {
        "unet": randomize_(UNet2DConditionModel.from_config(configs["unet"]), generator),
        "vae": randomize_(AutoencoderKL.from_config(configs["vae"]), generator),
        "text_encoder": randomize_(
            CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"])), generator
        ),
        "scheduler": build_scheduler(configs["scheduler"]),
    }
    if "text_encoder_2" in configs:
        config_2 = CLIPTextConfig.from_dict(configs["text_encoder_2"])
        components["text_encoder_2"] = randomize_(CLIPTextModelWithProjection(config_2), generator)
    for name, pad in tokenizer_pads(arch.family).items():
        components[name] = load_clip_tokenizer(pad)
    return components


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread for the duration (restores the previous setting).

    Toy-sized models gain nothing from intra-op threads, and on a loaded machine OpenMP's
    spin-waiting workers make each tiny op take milliseconds instead of microseconds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
