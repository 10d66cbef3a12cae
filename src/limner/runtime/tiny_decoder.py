"""A tiny latent decoder for previews and a fast mode: the TAESD architecture.

TAESD (Ollin Boer Bohan, github.com/madebyollin/taesd) decodes Stable Diffusion latents
with a plain conv net of about 1.2M parameters: tanh clamp of the latents to +-3, a
3x3 conv to 64 channels, then per stage three residual blocks (three 3x3 convs, ReLU), a
2x nearest upsampling and a bias-free 3x3 conv; one last block and a 3x3 conv to RGB in
[0, 1]. It reads the *scaled* latents that the diffusion model samples.

diffusers implements that network as `DecoderTiny`; we use it, and read decoders in the
two layouts they are published in:
- the original one (`taesd_decoder.safetensors`): keys `"{i}.{param}"` of a Sequential
  whose index 0 is the parameter-free clamp, so index i is `DecoderTiny.layers[i - 1]`;
- diffusers' `AutoencoderTiny` folder file: keys `"decoder.layers.{i - 1}.{param}"`
  (encoder keys are ignored).
`save_tiny_decoder` writes the original layout, so files made here work elsewhere too.

`distill_tiny_decoder` trains one for a VAE that has none (the built-in model's): the
student learns to reproduce the VAE decoder's pixels from the same latents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DecoderTiny

from limner.errors import InputFileError, ModelLoadError

CHANNELS = 64  # TAESD's width at every stage
BLOCKS_PER_STAGE = 3
_DIFFUSERS_PREFIX = "decoder.layers."


@dataclass(frozen=True)
class TinyDecoderConfig:
    latent_channels: int = 4
    upsamples: int = 3  # log2 of the VAE's scale factor (8 for SD: 3)

    def build(self) -> TinyDecoder:
        return TinyDecoder(self)


class TinyDecoder(torch.nn.Module):
    """Scaled latents (B, C, h, w) -> pixels (B, 3, h * 2**upsamples, ...) in [-1, 1]."""

    def __init__(self, config: TinyDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = DecoderTiny(
            in_channels=config.latent_channels,
            out_channels=3,
            num_blocks=(BLOCKS_PER_STAGE,) * config.upsamples + (1,),
            block_out_channels=(CHANNELS,) * (config.upsamples + 1),
            upsampling_scaling_factor=2,
            act_fn="relu",
            upsample_fn="nearest",
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)  # DecoderTiny maps its [0, 1] output to [-1, 1]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def config_for_vae(vae) -> TinyDecoderConfig:
    """The tiny decoder shape that matches a diffusers `AutoencoderKL`."""
    upsamples = len(vae.config.block_out_channels) - 1
    return TinyDecoderConfig(latent_channels=vae.config.latent_channels, upsamples=upsamples)


def to_original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`TinyDecoder` state dict -> TAESD's original keys ("{i}.{param}", index 0 the clamp)."""
    out = {}
    for key, tensor in state.items():
        index, rest = key.removeprefix(_DIFFUSERS_PREFIX).split(".", 1)
        out[f"{int(index) + 1}.{rest}"] = tensor
    return out


def from_published_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Either published layout -> `TinyDecoder` keys ("decoder.layers.{i}.{param}")."""
    if any(key.startswith(_DIFFUSERS_PREFIX) for key in state):
        return {k: v for k, v in state.items() if k.startswith(_DIFFUSERS_PREFIX)}
    out = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"(\d+)\.(.+)", key)
        if match is None or int(match.group(1)) == 0:
            raise ModelLoadError(f"not a TAESD decoder: unexpected tensor {key!r}")
        out[f"{_DIFFUSERS_PREFIX}{int(match.group(1)) - 1}.{match.group(2)}"] = tensor
    return out


def infer_config(state: dict[str, torch.Tensor]) -> TinyDecoderConfig:
    """The shape of a decoder from its (TinyDecoder-keyed) tensors."""
    first = state.get(f"{_DIFFUSERS_PREFIX}0.weight")
    if first is None or first.ndim != 4 or first.shape[0] != CHANNELS:
        raise ModelLoadError("not a TAESD decoder: no 64-channel input convolution")
    last_index = max(int(k[len(_DIFFUSERS_PREFIX) :].split(".", 1)[0]) for k in state)
    # layers: conv, relu, then per upsampling stage 3 blocks + upsample + conv, then
    # 1 block + conv: last index = 2 + 5 * upsamples + 1.
    upsamples, remainder = divmod(last_index - 3, BLOCKS_PER_STAGE + 2)
    if remainder or upsamples < 1:
        raise ModelLoadError(f"not a TAESD decoder: {last_index + 1} layers")
    return TinyDecoderConfig(latent_channels=int(first.shape[1]), upsamples=upsamples)


def load_tiny_decoder(path: str | Path, *, dtype: torch.dtype = torch.float32) -> TinyDecoder:
    """Read a TAESD-format decoder (.safetensors; either published layout)."""
    from limner.checkpoints.safe_load import load_state_dict

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"tiny decoder not found: {path}")
    state = from_published_layout(load_state_dict(path))
    config = infer_config(state)
    model = config.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelLoadError(f"{path}: does not fit the TAESD decoder layout: {err}") from None
    return model.to(dtype).eval().requires_grad_(False)


def save_tiny_decoder(model: TinyDecoder, path: str | Path) -> Path:
    """Write `model` in TAESD's original layout (safetensors, atomically)."""
    from limner.checkpoints.safe_load import write_safetensors_atomic

    path = Path(path)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "taesd-decoder",
        "latent_channels": str(model.config.latent_channels),
        "upsamples": str(model.config.upsamples),
    }
    write_safetensors_atomic(to_original_layout(state), path, metadata=metadata, overwrite=True)
    return path


@dataclass
class DistillReport:
    steps: int
    first_loss: float
    last_loss: float


def distill_tiny_decoder(
    vae,
    latents: Iterable[torch.Tensor],
    *,
    steps: int,
    lr: float = 1e-3,
    student: TinyDecoder | None = None,
    on_step=None,
) -> tuple[TinyDecoder, DistillReport]:
    """Train a tiny decoder to reproduce `vae`'s decoder (knowledge distillation).

    `latents` yields batches of *scaled* latents (B, C, h, w), e.g. the VAE's encodings of
    training images times its scaling factor, or the denoiser's samples; the target is the
    VAE decoder's output for the same latents. The loss is L1 + MSE on pixels, which
    keeps edges sharper than MSE alone.
    """
    student = student or config_for_vae(vae).build()
    student.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    batches = _cycle(latents)
    for step in range(steps):
        loss = distillation_loss(vae, student, next(batches).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
        if not math.isfinite(losses[-1]):
            raise ModelLoadError(f"distillation diverged at step {step} (loss {losses[-1]})")
    student.eval().requires_grad_(False)
    return student, DistillReport(steps, losses[0], losses[-1])


def distillation_loss(vae, student: TinyDecoder, latents: torch.Tensor) -> torch.Tensor:
    """L1 + MSE between the student's pixels and the VAE decoder's for the same scaled
    latents (B, C, h, w); L1 keeps edges sharper than MSE alone."""
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        target = vae.decode(latents.to(vae.dtype) / scale + shift).sample.float().clamp(-1, 1)
    pred = student(latents.to(student.dtype)).float()
    return F.l1_loss(pred, target) + F.mse_loss(pred, target)


def _cycle(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    cached = []
    for batch in batches:
        cached.append(batch)
        yield batch
    if not cached:
        raise ValueError("no latents to distil from")
    while True:
        yield from cached


_loaded: dict[tuple[str, torch.dtype], TinyDecoder] = {}


def cached_tiny_decoder(path: str | Path, *, dtype: torch.dtype) -> TinyDecoder:
    """`load_tiny_decoder`, kept between calls (one decoder at a time)."""
    key = (str(Path(path).expanduser().resolve()), dtype)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_tiny_decoder(path, dtype=dtype)
    return _loaded[key]


def preview_image(decoder: TinyDecoder, latents: torch.Tensor):
    """The first latent of a batch (B, C, h, w) decoded by `decoder`, as a PIL image."""
    from PIL import Image

    with torch.no_grad():
        pixels = decoder(latents[:1].to(decoder.dtype)).float()
    array = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array, "RGB")
