"""Widening a trained UNet2DConditionModel k times without changing what it computes.

Function-preserving growth in the manner of Net2Net (Chen, Goodfellow & Shlens 2016): each
channel c of every feature map becomes the k adjacent channels k*c .. k*c+k-1, all equal
to the old one. A layer's outputs are repeated k times; its weights on a widened input
are split into k parts that sum to the old weight, so each output is unchanged. The
parts are random (not 1/k each): copies whose outgoing weights were equal would get
equal gradients and stay copies for ever.

Why adjacent copies make the rest hold without special cases:
- group and layer norms see each group repeated k times: same mean and variance;
- a head of the widened attention holds exactly the copies of the old head's channels
  (the head count stays; heads get k times wider), and concatenations (the up blocks'
  skips, GEGLU's value and gate halves) widen to the concatenation of their widened parts.

Two layers need care. The queries are scaled by 1/sqrt(k): q.k over the widened head is
k times the old one while the softmax scale 1/sqrt(head_dim) shrinks by only sqrt(k).
And the sinusoidal timestep features are not channels: Timesteps(k*C) has the
frequencies of Timesteps(C) at every k-th place of each (cos, sin) half (with no
frequency shift), so `time_embedding.linear_1` takes its old columns there and zeros for
the new frequencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from limner.errors import InvalidRequestError

# Config fields that only record where a config came from.
_PROVENANCE = {"_name_or_path", "_diffusers_version", "_class_name", "_use_default_values"}


def widening_factor(trained: Mapping[str, Any], target: Mapping[str, Any]) -> int | None:
    """k when `target` is `trained` with every block k >= 2 times wider and nothing else
    changed; None when the block widths are the same (nothing to widen). Anything else
    is an error that says what differs."""
    old, new = list(trained["block_out_channels"]), list(target["block_out_channels"])
    if old == new:
        return None
    k = new[0] // old[0] if len(old) == len(new) and old[0] else 0
    if k < 2 or any(b != k * a for a, b in zip(old, new, strict=True)):
        raise InvalidRequestError(
            f"block widths {new} are not the trained {old} times one whole number >= 2"
        )
    keys = (set(trained) | set(target)) - _PROVENANCE - {"block_out_channels"}
    differ = sorted(key for key in keys if trained.get(key) != target.get(key))
    if differ:
        raise InvalidRequestError(
            "widening changes the block widths only; the architecture also changes "
            + ", ".join(differ)
        )
    if target.get("freq_shift", 0) != 0:
        raise InvalidRequestError("widening needs timestep features with freq_shift 0")
    if target.get("time_embedding_type", "positional") != "positional":
        raise InvalidRequestError("widening needs the positional (sinusoidal) time embedding")
    return k


def _split(weight: torch.Tensor, k: int, generator: torch.Generator, spread: float):
    """Repeat dim 1 (the inputs) k times, the k copies of each weight summing to it."""
    shape = (weight.shape[0], weight.shape[1], k, *weight.shape[2:])
    parts = 1 + spread * torch.randn(shape, generator=generator, dtype=weight.dtype)
    parts = parts / parts.sum(dim=2, keepdim=True)  # sums to exactly 1 (to rounding)
    widened = weight.unsqueeze(2) * parts
    return widened.reshape(weight.shape[0], weight.shape[1] * k, *weight.shape[2:])


def _sinusoid_columns(weight: torch.Tensor, k: int) -> torch.Tensor:
    """time_embedding.linear_1's weight (out, C) -> (out, k*C): old column i of each half
    goes to column k*i of the same half, the new frequencies start at zero."""
    out, channels = weight.shape
    half = channels // 2
    widened = weight.new_zeros(out, k * channels)
    for h in range(2):
        widened[:, h * k * half : (h + 1) * k * half : k] = weight[:, h * half : (h + 1) * half]
    return widened


def widen_state_dict(
    trained: Mapping[str, torch.Tensor],
    shapes: Mapping[str, torch.Size],
    k: int,
    generator: torch.Generator,
    spread: float = 0.25,
) -> dict[str, torch.Tensor]:
    """The weights `trained` widened k times to the parameter `shapes` of the wider UNet
    (the module docstring says how). `spread` is the relative spread of the random split
    of each input weight into its k copies."""
    if set(trained) != set(shapes):
        missing, extra = set(shapes) - set(trained), set(trained) - set(shapes)
        raise InvalidRequestError(
            f"widening keeps the layers: {len(missing)} missing, {len(extra)} extra"
        )
    widened = {}
    for name, weight in trained.items():
        new, old = tuple(shapes[name]), tuple(weight.shape)
        if len(new) != len(old) or any(n not in (o, k * o) for n, o in zip(new, old, strict=True)):
            raise InvalidRequestError(f"{name}: {old} does not widen to {new}")
        w = weight.float()
        if new[0] == k * old[0]:
            w = w.repeat_interleave(k, dim=0)
        if len(new) > 1 and new[1] == k * old[1]:
            if name == "time_embedding.linear_1.weight":
                w = _sinusoid_columns(w, k)
            else:
                w = _split(w, k, generator, spread)
        if name.endswith(("to_q.weight", "to_q.bias")) and new[0] == k * old[0]:
            w = w * k**-0.5
        if tuple(w.shape) != new:
            raise InvalidRequestError(f"{name}: widened to {tuple(w.shape)}, expected {new}")
        widened[name] = w
    return widened
