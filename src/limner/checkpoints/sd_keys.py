"""One key table between diffusers components and the original (CompVis / SAI "LDM") layout.

A Stable Diffusion single-file checkpoint stores every network under one flat namespace:

* UNet: ``model.diffusion_model.``
* VAE: ``first_stage_model.``
* SD 1.x text encoder (CLIP ViT-L/14): ``cond_stage_model.transformer.text_model.``
* SD 2.x text encoder (OpenCLIP ViT-H/14): ``cond_stage_model.model.``
* SDXL text encoders: ``conditioner.embedders.0.transformer.text_model.`` (CLIP ViT-L/14) and
  ``conditioner.embedders.1.model.`` (OpenCLIP ViT-bigG/14)

(prefixes as in CompVis/stable-diffusion ``ldm/models/diffusion/ddpm.py``,
Stability-AI/stablediffusion ``ldm/modules/encoders/modules.py`` and
Stability-AI/generative-models ``sgm/models/diffusion.py``).

The table is generated from the component configs plus the list of diffusers state-dict keys
(:func:`build_key_table`); the per-component naming rules live in :mod:`.sd_keys_unet`,
:mod:`.sd_keys_vae` and :mod:`.sd_keys_clip`. Each row says how one original tensor is made
from one or more diffusers tensors, with an exactly invertible operation, so
:func:`to_original` and :func:`from_original` read the *same* rows and a round trip is
bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

from .sd_keys_clip import clip_text_key_to_original, open_clip_key_to_original
from .sd_keys_unet import make_unet_rule
from .sd_keys_vae import make_vae_rule

T = TypeVar("T")
Family = Literal["sd1", "sd2", "sdxl"]
Op = Literal["copy", "conv1x1", "qkv", "transpose"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer.text_model."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."

# The text towers each family has, and how their keys are spelt in the original file.
TEXT_ENCODERS: dict[Family, dict[str, tuple[str, Literal["hf", "open_clip"]]]] = {
    "sd1": {"text_encoder": (SD1_TEXT_PREFIX, "hf")},
    "sd2": {"text_encoder": (SD2_TEXT_PREFIX, "open_clip")},
    "sdxl": {
        "text_encoder": (SDXL_TEXT_PREFIX, "hf"),
        "text_encoder_2": (SDXL_TEXT2_PREFIX, "open_clip"),
    },
}


@dataclass(frozen=True)
class KeyMapping:
    """How one original tensor relates to diffusers tensors of one component.

    ``op`` is ``copy`` (same tensor), ``conv1x1`` (original is the diffusers linear weight
    with two trailing 1-sized dims), ``qkv`` (original is ``cat([q, k, v], dim=0)`` of the
    three diffusers tensors, in that order) or ``transpose`` (original is the 2-D transpose).
    """

    original: str
    component: str
    diffusers: tuple[str, ...]
    op: Op


def _rows_for_component(
    component: str,
    keys: Iterable[str],
    prefix: str,
    rule: Callable[[str], tuple[str, str]],
) -> list[KeyMapping]:
    """Apply a per-key rule ``key -> (original suffix, op)`` and group the qkv triples."""
    rows: dict[str, KeyMapping] = {}
    for key in keys:
        suffix, op = rule(key)
        original = prefix + suffix
        previous = rows.get(original)
        if previous is None:
            rows[original] = KeyMapping(original, component, (key,), op)
        elif op == "qkv" and previous.op == "qkv":
            rows[original] = KeyMapping(original, component, (*previous.diffusers, key), op)
        else:
            raise ValueError(f"{component}: {key} and {previous.diffusers} both map to {original}")
    for row in rows.values():
        if row.op == "qkv":
            if len(row.diffusers) != 3:
                raise ValueError(f"{row.original}: expected q, k and v, got {row.diffusers}")
            order = {".q_proj.": 0, ".k_proj.": 1, ".v_proj.": 2}
            ranked = sorted(
                row.diffusers, key=lambda k: next(v for s, v in order.items() if s in k)
            )
            rows[row.original] = KeyMapping(row.original, component, tuple(ranked), "qkv")
    return list(rows.values())


def build_key_table(
    family: Family,
    component_keys: Mapping[str, Iterable[str]],
    *,
    unet_config: Mapping,
    vae_config: Mapping,
) -> list[KeyMapping]:
    """All rows for one architecture.

    ``component_keys`` maps component names ("unet", "vae", "text_encoder",
    "text_encoder_2") to the *diffusers* state-dict keys of those components (take them from
    the model, e.g. one built on the meta device). UNet and VAE naming depends on their block
    layout, hence the configs.
    """
    unet_rule = make_unet_rule(unet_config)
    rows = _rows_for_component(
        "unet", component_keys["unet"], UNET_PREFIX, lambda key: (unet_rule(key), "copy")
    )
    rows += _rows_for_component("vae", component_keys["vae"], VAE_PREFIX, make_vae_rule(vae_config))
    for component, (prefix, layout) in TEXT_ENCODERS[family].items():
        rule = clip_text_key_to_original if layout == "hf" else open_clip_key_to_original
        rows += _rows_for_component(component, component_keys[component], prefix, rule)
    return rows


def _to_original_tensor(op: Op, tensors: list[torch.Tensor]) -> torch.Tensor:
    if op == "copy":
        return tensors[0]
    if op == "conv1x1":
        return tensors[0].reshape(*tensors[0].shape, 1, 1)
    if op == "qkv":
        return torch.cat(tensors, dim=0)
    return tensors[0].t().contiguous()


def _from_original_tensor(op: Op, tensor: torch.Tensor) -> list[torch.Tensor]:
    if op == "copy":
        return [tensor]
    if op == "conv1x1":
        if tensor.dim() == 4:
            return [tensor.reshape(tensor.shape[0], tensor.shape[1])]
        return [tensor]  # some VAEs were saved with linear attention weights already
    if op == "qkv":
        return list(torch.chunk(tensor, 3, dim=0))
    return [tensor.t().contiguous()]


def to_original(
    table: Iterable[KeyMapping], components: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Diffusers component state dicts -> one original-layout state dict."""
    result: dict[str, torch.Tensor] = {}
    for row in table:
        state = components[row.component]
        result[row.original] = _to_original_tensor(row.op, [state[k] for k in row.diffusers])
    return result


def from_original(
    table: Iterable[KeyMapping], state_dict: Mapping[str, torch.Tensor]
) -> tuple[dict[str, dict[str, torch.Tensor]], list[str], dict[str, torch.Tensor]]:
    """Original-layout state dict -> (component state dicts, missing keys, unused tensors).

    ``missing`` lists original keys the table needs but the file lacks; ``unused`` holds the
    tensors of the file that no row reads (DDPM buffers, ``position_ids``, EMA weights, ...).
    """
    components: dict[str, dict[str, torch.Tensor]] = {}
    missing: list[str] = []
    used: set[str] = set()
    for row in table:
        tensor = state_dict.get(row.original)
        if tensor is None:
            missing.append(row.original)
            continue
        used.add(row.original)
        parts = _from_original_tensor(row.op, tensor)
        target = components.setdefault(row.component, {})
        for key, part in zip(row.diffusers, parts, strict=True):
            target[key] = part
    unused = {key: value for key, value in state_dict.items() if key not in used}
    return components, missing, unused


def normalize_original_keys(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Accept the older SD 1.x spelling without ``text_model.`` (transformers < 4.22 era).

    Early checkpoints store ``cond_stage_model.transformer.embeddings.*`` etc.; the same
    tensors live under ``cond_stage_model.transformer.text_model.*`` in later ones.
    """
    old = "cond_stage_model.transformer."
    result: dict[str, T] = {}
    for key, value in state_dict.items():
        if key.startswith(old) and not key.startswith(SD1_TEXT_PREFIX):
            key = SD1_TEXT_PREFIX + key[len(old) :]
        result[key] = value
    return result
