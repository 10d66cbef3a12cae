"""Which Stable Diffusion architecture a single-file checkpoint holds.

Decided from tensor names and shapes (read from the safetensors header, no data loaded):

* SDXL: ``conditioner.embedders.*`` text towers and the UNet's ``label_emb`` (size/crop
  conditioning), 2048-wide cross-attention context;
* SD 2.x: an OpenCLIP text tower under ``cond_stage_model.model.``, 1024-wide context;
* SD 1.x: the Hugging Face CLIP tower under ``cond_stage_model.transformer.``, 768-wide context;
* inpainting: the UNet's first convolution takes 9 channels (4 latent + 4 masked-image latent
  + 1 mask) instead of 4.

The prediction target (epsilon or v) is not visible in the weights. It is read from SAI
ModelSpec metadata (``modelspec.prediction_type``, https://github.com/Stability-AI/ModelSpec;
ComfyUI writes ``modelspec.predict_key``), from the ModelSpec architecture id
(``stable-diffusion-v2-768-v``), from ComfyUI's ``v_pred`` marker tensor, or from an LDM
``.yaml`` next to the checkpoint (``parameterization: "v"``). Without any of these, SD 1.x and
SDXL are epsilon models (all official ones are); for SD 2.x it is unknown (the official 2.x
768 models are v, the 512 ones epsilon) and the caller has to say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from limner.errors import ModelLoadError

from .sd_keys import SD1_TEXT_PREFIX, Family

PredictionType = Literal["epsilon", "v_prediction"]

UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_LABEL_EMB_KEY = "model.diffusion_model.label_emb.0.0.weight"
CONTEXT_KEY = "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"
_CONTEXT_DIMS: dict[Family, int] = {"sd1": 768, "sd2": 1024, "sdxl": 2048}
_V_WORDS = {"v", "v_prediction", "v-prediction", "vpred", "v_pred"}
_EPS_WORDS = {"epsilon", "eps", "epsilon_prediction", "noise"}
_YAML_PARAMETERIZATION = re.compile(r"^\s*parameterization\s*:\s*[\"']?(\w+)[\"']?", re.MULTILINE)


@dataclass(frozen=True)
class ArchInfo:
    """Family, inpainting (9-channel UNet) and prediction type (None when unknown)."""

    family: Family
    inpainting: bool = False
    prediction_type: PredictionType | None = "epsilon"

    @property
    def modelspec_architecture(self) -> str:
        """SAI ModelSpec architecture id (the spec lists the non-inpainting ones)."""
        if self.family == "sd1":
            base = "stable-diffusion-v1"
        elif self.family == "sd2":
            v = self.prediction_type == "v_prediction"
            base = "stable-diffusion-v2-768-v" if v else "stable-diffusion-v2-512"
        else:
            base = "stable-diffusion-xl-v1-base"
        return f"{base}-inpainting" if self.inpainting else base

    @property
    def resolution(self) -> int:
        """Native training resolution in pixels (square)."""
        if self.family == "sdxl":
            return 1024
        if self.family == "sd2" and self.prediction_type == "v_prediction":
            return 768
        return 512


def _normalize_prediction(value: str) -> PredictionType | None:
    word = value.strip().lower()
    if word in _V_WORDS:
        return "v_prediction"
    if word in _EPS_WORDS:
        return "epsilon"
    return None


def validate_prediction_type(value: str) -> PredictionType:
    """Accept "epsilon"/"eps" or "v_prediction"/"v"; raise ModelLoadError otherwise."""
    normalized = _normalize_prediction(value)
    if normalized is None:
        raise ModelLoadError(f"Unknown prediction type {value!r}; use 'epsilon' or 'v_prediction'.")
    return normalized


def prediction_type_from_metadata(
    shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str]
) -> PredictionType | None:
    """Prediction type stated by the file itself (metadata or marker tensors), else None."""
    if "v_pred" in shapes:  # ComfyUI's checkpoint-save marker for v models
        return "v_prediction"
    for key in ("modelspec.prediction_type", "modelspec.predict_key"):
        if key in metadata:
            found = _normalize_prediction(metadata[key])
            if found is not None:
                return found
    if metadata.get("ss_v_parameterization", "").strip().lower() == "true":
        return "v_prediction"
    architecture = metadata.get("modelspec.architecture", "")
    if re.search(r"-768-v\b", architecture):
        return "v_prediction"
    if architecture.startswith("stable-diffusion-v2-512"):
        return "epsilon"
    return None


def prediction_type_from_yaml(checkpoint: str | Path) -> PredictionType | None:
    """``parameterization`` of an LDM config named like the checkpoint (``x.yaml``), if any."""
    path = Path(checkpoint)
    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if candidate.is_file() and candidate.stat().st_size < 1_000_000:
            match = _YAML_PARAMETERIZATION.search(candidate.read_text(errors="replace"))
            if match:
                return _normalize_prediction(match.group(1))
            return "epsilon"  # LDM's default parameterization is "eps"
    return None


def _describe_unknown(shapes: Mapping[str, tuple[int, ...]]) -> str:
    names = list(shapes)
    heads = sorted({name.split(".")[0] for name in names})[:8]
    hint = ""
    if any(
        name.startswith(("lora_", "lora_unet", "lora_te")) or ".lora_" in name for name in names
    ):
        hint = " It looks like a LoRA, not a full model."
    elif any(name.startswith(("down_blocks.", "up_blocks.", "mid_block.")) for name in names):
        hint = " It looks like a diffusers-format UNet; load its model folder instead."
    elif any(name.startswith(("encoder.down.", "decoder.up.")) for name in names):
        hint = " It looks like a VAE-only file."
    return f"{len(names)} tensors, top-level names {heads}.{hint}"


def _family_from_keys(shapes: Mapping[str, tuple[int, ...]]) -> Family | None:
    names = shapes.keys()
    if SDXL_LABEL_EMB_KEY in shapes or any(n.startswith("conditioner.embedders.") for n in names):
        if any(n.startswith("conditioner.embedders.0.model.") for n in names):
            raise ModelLoadError(
                "This is an SDXL refiner checkpoint (OpenCLIP-only conditioner); only SDXL base "
                "models are supported."
            )
        return "sdxl"
    if any(n.startswith("cond_stage_model.model.") for n in names):
        return "sd2"
    if any(n.startswith(("cond_stage_model.transformer.", SD1_TEXT_PREFIX)) for n in names):
        return "sd1"
    return None


def detect_architecture(
    shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str]
) -> ArchInfo:
    """Family, inpainting and prediction type from tensor names/shapes and metadata."""
    unet_in = shapes.get(UNET_IN_KEY)
    if unet_in is None or len(unet_in) != 4:
        raise ModelLoadError(
            "Not a Stable Diffusion single-file checkpoint: no UNet input convolution "
            f"({UNET_IN_KEY}). Found {_describe_unknown(shapes)}"
        )
    in_channels = unet_in[1]
    if in_channels not in (4, 9):
        raise ModelLoadError(
            f"The UNet takes {in_channels} input channels; supported are 4 (text-to-image) and "
            f"9 (inpainting). 8 channels is an InstructPix2Pix model, which is not supported."
        )
    context = shapes.get(CONTEXT_KEY)
    family = _family_from_keys(shapes)
    if family is None and context is not None:
        family = next((f for f, dim in _CONTEXT_DIMS.items() if dim == context[1]), None)
    if family is None:
        raise ModelLoadError(
            f"Unrecognised Stable Diffusion variant: no known text encoder. Found "
            f"{_describe_unknown(shapes)}"
        )
    known_widths = _CONTEXT_DIMS.values()
    if context is not None and context[1] in known_widths and context[1] != _CONTEXT_DIMS[family]:
        raise ModelLoadError(
            f"Inconsistent checkpoint: {family} text encoder keys but a {context[1]}-wide UNet "
            f"cross-attention context (expected {_CONTEXT_DIMS[family]})."
        )
    prediction = prediction_type_from_metadata(shapes, metadata)
    if prediction is None and family in ("sd1", "sdxl"):
        prediction = "epsilon"
    return ArchInfo(family=family, inpainting=in_channels == 9, prediction_type=prediction)
