"""Load and export Stable Diffusion single-file checkpoints in the original (LDM) layout.

``load_single_file`` turns a ``.safetensors`` checkpoint as published by CompVis, RunwayML and
Stability AI (and most fine-tunes) into ready diffusers/transformers components, without the
Hugging Face hub: the component configs and tokenizer files ship with limner
(``configs/``), and the key mapping is our own table (:mod:`.sd_keys`).

``export_single_file`` writes components back to that layout, with SAI ModelSpec metadata,
atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights

from limner.errors import InputFileError, InvalidRequestError, ModelLoadError

from .arch import (
    ArchInfo,
    PredictionType,
    detect_architecture,
    prediction_type_from_metadata,
    prediction_type_from_yaml,
    validate_prediction_type,
)
from .component_configs import (
    build_scheduler,
    default_component_configs,
    load_clip_tokenizer,
    merge_configs,
    tokenizer_pads,
)
from .safe_load import (
    read_safetensors_header,
    sniff_format,
    write_safetensors_atomic,
)
from .sd_extras import derived_extras, is_ema_weight
from .sd_keys import (
    TEXT_ENCODERS,
    build_key_table,
    from_original,
    normalize_original_keys,
    to_original,
)

__all__ = [
    "ArchInfo",
    "SingleFileModel",
    "detect_architecture",
    "export_single_file",
    "load_single_file",
    "to_original_state_dict",
]

logger = logging.getLogger(__name__)

_IMPLEMENTATION = {
    "sd1": "https://github.com/CompVis/stable-diffusion",
    "sd2": "https://github.com/Stability-AI/stablediffusion",
    "sdxl": "sgm",
}


@dataclass
class SingleFileModel:
    """A loaded checkpoint: its architecture, ready components, metadata and leftovers.

    ``components`` uses diffusers pipeline names: ``unet``, ``vae``, ``text_encoder``,
    ``tokenizer``, ``scheduler`` and, for SDXL, ``text_encoder_2`` / ``tokenizer_2``.
    ``extras`` holds the file's tensors that no component owns (DDPM buffers, CLIP
    ``position_ids``, OpenCLIP ``logit_scale``, ...); pass them to :func:`export_single_file`
    as ``extra_tensors`` to write them back unchanged. The UNet's EMA copy
    (``model_ema.diffusion_model*``), present in unpruned checkpoints, is not loaded.
    """

    arch: ArchInfo
    components: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def _empty_model(name: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """Build a component on the meta device (no memory for weights; buffers stay real)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        if name == "unet":
            return UNet2DConditionModel.from_config(dict(config))
        if name == "vae":
            return AutoencoderKL.from_config(dict(config))
        text_config = CLIPTextConfig.from_dict(dict(config))
        with_projection = "CLIPTextModelWithProjection" in config.get("architectures", [])
        model_cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
        return model_cls(text_config)


def _model_names(family: str) -> list[str]:
    return ["unet", "vae", *TEXT_ENCODERS[family]]


def _resolve_prediction(
    path: Path,
    arch: ArchInfo,
    shapes: Mapping[str, tuple[int, ...]],
    metadata: Mapping[str, str],
    explicit: str | None,
) -> PredictionType:
    """Explicit argument > the file's own metadata > sidecar .yaml > family default."""
    if explicit is not None:
        return validate_prediction_type(explicit)
    stated = prediction_type_from_metadata(shapes, metadata) or prediction_type_from_yaml(path)
    if stated is not None:
        return stated
    return arch.prediction_type  # None for SD 2.x without a hint: probed once loaded


@torch.no_grad()
def probe_v_prediction(unet: torch.nn.Module) -> bool:
    """Whether an SD 2.x UNet predicts v, by how it answers a flat grey input at the
    noisiest timestep (the test A1111 uses for SD 2.x files without a config).

    At t=999 the input is almost pure noise, so an epsilon model returns about the input
    itself, while a v model (v = alpha*eps - sigma*x0, alpha ~ 0) returns about -x0: far
    below the input.
    """
    param = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=param.dtype)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=param.dtype)
    out = unet(x, torch.tensor([999]), encoder_hidden_states=context, return_dict=False)[0]
    return (out - x[:, : out.shape[1]]).mean().item() < -1.0


def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(state)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _owned(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A freshly allocated copy in ``dtype`` (floating point) for a model parameter.

    Tensors read from a safetensors file may be views into the file mapping at unaligned
    offsets, and q/k/v splits are views of one packed tensor; owned, allocator-aligned
    storage keeps the loaded model's numerics identical to a model built in memory (CPU
    kernels pick different SIMD paths for unaligned data) and frees the file mapping.
    """
    if tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor.clone(memory_format=torch.contiguous_format)


class _LazyTensors(Mapping[str, torch.Tensor]):
    """The tensors of an open safetensors file, read on access: `weights` (model
    parameters) come back owned and in `dtype`, anything else as stored."""

    def __init__(self, handle, names: Mapping[str, str], weights: set[str], dtype) -> None:
        self._handle, self._names, self._weights, self._dtype = handle, names, weights, dtype

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = self._handle.get_tensor(self._names[key])
        return _owned(tensor, self._dtype) if key in self._weights else tensor

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _open_safetensors(file: Path):
    """safe_open on a file whose header `read_safetensors_header` has checked."""
    from safetensors import safe_open

    try:
        return safe_open(file, framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise InputFileError(f"Could not read safetensors file {file}: {exc}") from exc


def _assign_weights(
    name: str, model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> None:
    expected = model.state_dict()
    for key, tensor in state.items():
        want = tuple(expected[key].shape)
        if tuple(tensor.shape) != want:
            raise ModelLoadError(
                f"{source}: {name} weight {key} has shape {tuple(tensor.shape)}, the model "
                f"config expects {want}. The checkpoint does not match the detected architecture."
            )
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()


def _report_leftovers(path: Path, unused: Mapping[str, torch.Tensor]) -> None:
    ema = sum(1 for key in unused if is_ema_weight(key))
    if ema:
        logger.info("%s: ignoring %d EMA weight tensors (model_ema.*)", path.name, ema)


def describe_checkpoint(path: str | os.PathLike[str]) -> str:
    """A one-line architecture description from the file's header alone (no weights read),
    e.g. "stable-diffusion-v1" or "stable-diffusion-v2-768-v"; pickles are named as such."""
    file = Path(path)
    if sniff_format(file) == "pickle":
        return "pickle checkpoint (convert it with `limner convert`)"
    header = read_safetensors_header(file)
    metadata = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    shapes = normalize_original_keys(
        {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    )
    arch = detect_architecture(shapes, metadata)
    if arch.prediction_type is None:
        arch = replace(arch, prediction_type=prediction_type_from_yaml(file))
    if arch.prediction_type is None:
        return f"{arch.family} (prediction type decided at load)"
    return arch.modelspec_architecture


def load_single_file(
    path: str | os.PathLike[str],
    *,
    prediction_type: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
    component_configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> SingleFileModel:
    """Load a single-file SD 1.x / 2.x / SDXL checkpoint (safetensors only) into components.

    ``prediction_type`` ("epsilon" or "v_prediction") overrides what the file says; without
    it the file's ModelSpec metadata, then a sidecar ``.yaml``, then the family default is
    used (SD 2.x files with no hint are assumed epsilon, with a warning).
    ``component_configs`` overrides keys of the shipped configs per component (for models
    whose sizes differ from the official ones). Pickles raise ``UnsafeCheckpointError``.
    """
    file = Path(path)
    header = read_safetensors_header(file)
    metadata = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    shapes = normalize_original_keys(
        {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    )
    arch = detect_architecture(shapes, metadata)
    arch = replace(
        arch, prediction_type=_resolve_prediction(file, arch, shapes, metadata, prediction_type)
    )
    configs = merge_configs(default_component_configs(arch), component_configs)
    models = {name: _empty_model(name, configs[name]) for name in _model_names(arch.family)}
    table = build_key_table(
        arch.family,
        {name: list(model.state_dict()) for name, model in models.items()},
        unet_config=models["unet"].config,
        vae_config=models["vae"].config,
    )
    with _open_safetensors(file) as handle:
        # Tensors are read from the memory-mapped file one at a time, as the key table
        # asks for them, and converted to `torch_dtype` at once: the load never holds
        # the whole file's tensors and the model at the same time.
        names = normalize_original_keys({k: k for k in handle.keys() if not is_ema_weight(k)})
        weights = {row.original for row in table}
        state = _LazyTensors(handle, names, weights, torch_dtype)
        parts, missing, unused = from_original(table, state)
        del state
    if missing:
        raise ModelLoadError(
            f"{file.name} looks like an {arch.modelspec_architecture} checkpoint but lacks "
            f"{len(missing)} of its tensors (e.g. {missing[:3]}); it may be incomplete or a "
            f"different variant."
        )
    for name, model in models.items():
        # Read tensors are owned already; the views that splitting packed q/k/v made
        # get storage of their own.
        owned = {
            key: tensor if tensor._base is None else _owned(tensor, torch_dtype)
            for key, tensor in parts.pop(name).items()
        }
        _assign_weights(name, model, owned, file.name)
    _report_leftovers(file, unused)
    if arch.prediction_type is None:
        probed = "v_prediction" if probe_v_prediction(models["unet"]) else "epsilon"
        logger.info("%s: no prediction type stated; the UNet answers as %s", file.name, probed)
        arch = replace(arch, prediction_type=probed)
        configs = merge_configs(default_component_configs(arch), component_configs)
        # v models of SD 2.x are the 768 px ones: the default size follows.
        models["unet"].register_to_config(sample_size=configs["unet"]["sample_size"])
    components: dict[str, Any] = dict(models)
    for tokenizer_name, pad in tokenizer_pads(arch.family).items():
        components[tokenizer_name] = load_clip_tokenizer(pad)
    components["scheduler"] = build_scheduler(configs["scheduler"])
    return SingleFileModel(
        arch=arch,
        components=components,
        metadata=metadata,
        extras={k: v.clone() for k, v in unused.items() if not is_ema_weight(k)},
    )


def _check_components(components: Mapping[str, Any], arch: ArchInfo) -> None:
    for name in _model_names(arch.family):
        model = components.get(name)
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise InvalidRequestError(
                f"export needs a '{name}' model (diffusers/transformers, with .config) for "
                f"{arch.family}; got {type(model).__name__}."
            )
    in_channels = components["unet"].config.in_channels
    if (in_channels == 9) != arch.inpainting:
        raise InvalidRequestError(
            f"arch.inpainting={arch.inpainting} but the UNet takes {in_channels} input channels."
        )
    if arch.prediction_type is None:
        raise InvalidRequestError("arch.prediction_type must be set to export.")


def modelspec_metadata(arch: ArchInfo, title: str) -> dict[str, str]:
    """SAI ModelSpec 1.0.0 keys for ``arch`` (https://github.com/Stability-AI/ModelSpec)."""
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": arch.modelspec_architecture,
        "modelspec.implementation": _IMPLEMENTATION[arch.family],
        "modelspec.title": title,
        "modelspec.resolution": f"{arch.resolution}x{arch.resolution}",
        # ModelSpec spells the two targets "epsilon" and "v".
        "modelspec.prediction_type": "v" if arch.prediction_type == "v_prediction" else "epsilon",
    }


def to_original_state_dict(
    components: Mapping[str, Any],
    arch: ArchInfo,
    *,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The original-layout state dict :func:`export_single_file` writes (without casting).

    Works on meta-device models too, which gives the exact key set and shapes of a
    full-size export without allocating it.
    """
    _check_components(components, arch)
    states = {name: components[name].state_dict() for name in _model_names(arch.family)}
    table = build_key_table(
        arch.family,
        {name: list(state) for name, state in states.items()},
        unet_config=components["unet"].config,
        vae_config=components["vae"].config,
    )
    tensors = to_original(table, states)
    scheduler = components.get("scheduler")
    scheduler_config = (
        scheduler.config if scheduler is not None else default_component_configs(arch)["scheduler"]
    )
    extras = derived_extras(
        arch.family,
        scheduler_config=scheduler_config,
        max_position_embeddings=components["text_encoder"].config.max_position_embeddings,
    )
    extras.update(extra_tensors or {})
    for key, value in extras.items():
        tensors.setdefault(key, value)  # component weights always win over carried extras
    return tensors


def export_single_file(
    components: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    arch: ArchInfo,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> int:
    """Write ``components`` as one original-layout safetensors file; return the tensor count.

    Writes every component tensor, the derivable extras of an official checkpoint (DDPM
    schedule buffers, CLIP ``position_ids``, EMA bookkeeping placeholders for SD 1.x/2.x),
    then ``extra_tensors`` (e.g. ``SingleFileModel.extras``) for keys the components do not
    cover. ``dtype`` casts floating-point tensors; ``metadata`` is merged over the ModelSpec
    keys. The file is written to a temporary name and renamed into place; an existing file
    is only replaced with ``overwrite=True``.
    """
    tensors = to_original_state_dict(components, arch, extra_tensors=extra_tensors)
    target = Path(path)
    header = modelspec_metadata(arch, title=target.stem)
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRequestError(f"metadata must map str to str; got {key!r}: {value!r}")
        header[key] = value
    write_safetensors_atomic(_cast(tensors, dtype), target, metadata=header, overwrite=overwrite)
    return len(tensors)
