"""Finding and loading latent diffusion models, from local files only.

A model is named by a path (a single-file `.safetensors` checkpoint or a diffusers-format
folder) or by a name registered in the limner home folder (`LIMNER_HOME/models/NAME` or
`NAME.safetensors`). No name means the built-in model. The hub is never asked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from limner.errors import ModelLoadError, UnsafeCheckpointError
from limner.home import models_dir
from limner.models.latent import Family, LatentDiffusionModel
from limner.models.latent_rgb import SD_LATENT_RGB, LatentRGB, load_latent_rgb
from limner.models.text import PromptEncoder, TokenEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a load must never reach for the hub

BUILTIN_NAME = "builtin"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# Classes a diffusers folder may name in model_index.json, and where they live. A folder
# is data from elsewhere: we do not import arbitrary classes it names.
_ALLOWED_CLASSES = {
    "diffusers": {"UNet2DConditionModel", "AutoencoderKL"},
    "transformers": {
        "CLIPTextModel",
        "CLIPTextModelWithProjection",
        "CLIPTokenizer",
        "CLIPTokenizerFast",
        "BertModel",
        "BertTokenizer",
        "BertTokenizerFast",
    },
}


@dataclass(frozen=True)
class ModelRef:
    """Where a model is: the built-in one, a single file or a diffusers folder."""

    name: str
    kind: str  # "builtin" | "builtin_parts" | "single_file" | "diffusers"
    path: Path | None


def resolve_model(name_or_path: str | os.PathLike | None) -> ModelRef:
    """Turn what the user typed into a `ModelRef`, or say what is available."""
    if name_or_path is None or str(name_or_path) in ("", BUILTIN_NAME):
        return ModelRef(BUILTIN_NAME, "builtin", None)
    text = str(name_or_path)
    candidates = [Path(text).expanduser()]
    if os.sep not in text and "/" not in text:
        home = models_dir()
        candidates += [home / text] + [home / (text + suffix) for suffix in CHECKPOINT_SUFFIXES]
    for path in candidates:
        if path.is_dir():
            from limner.models.builtin import is_parts_folder

            if is_parts_folder(path):  # a trainer's export: built-in parts
                return ModelRef(path.name, "builtin_parts", path.resolve())
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(
                    f"{path} is a folder but not a diffusers model (it has no model_index.json, "
                    "nor the unet/ or vae/ of a `limner train ... --export`)"
                )
            return ModelRef(path.name, "diffusers", path.resolve())
        if path.is_file():
            return ModelRef(path.stem, "single_file", path.resolve())
    known = ", ".join(ref.name for ref in registered_models()) or "none registered"
    raise ModelLoadError(
        f"model {text!r} not found: give a path to a .safetensors file or a diffusers folder, "
        f"or a name in {models_dir()} (known: {BUILTIN_NAME}, {known})"
    )


def registered_models() -> list[ModelRef]:
    """The models in the home folder's models/ directory, by name."""
    refs = []
    for path in sorted(models_dir().iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and (path / "model_index.json").is_file():
            refs.append(ModelRef(path.name, "diffusers", path))
        elif path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
            refs.append(ModelRef(path.stem, "single_file", path))
    return refs


def load_model(
    ref: ModelRef,
    *,
    torch_dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
) -> LatentDiffusionModel:
    """Load a model bundle from local files."""
    if ref.kind == "builtin":
        from limner.models.builtin import load_builtin

        return load_builtin(torch_dtype=torch_dtype)
    if ref.kind == "builtin_parts":
        from limner.models.builtin import load_builtin_parts

        model = load_builtin_parts(ref.path, torch_dtype=torch_dtype)
    elif ref.kind == "diffusers":
        components = load_diffusers_folder(ref.path, torch_dtype=torch_dtype)
        model = bundle_from_components(components, name=ref.name, source=ref.path)
    else:
        from limner.checkpoints.single_file import load_single_file

        loaded = load_single_file(
            ref.path, prediction_type=prediction_type, torch_dtype=torch_dtype
        )
        model = bundle_from_components(
            loaded.components, name=ref.name, source=ref.path, family=Family(loaded.arch.family)
        )
    if prediction_type is not None:
        model.scheduler_config["prediction_type"] = prediction_type
    return model


def load_diffusers_folder(folder: Path, *, torch_dtype: torch.dtype = torch.float32) -> dict:
    """Load each component a diffusers folder lists, safetensors weights only."""
    import diffusers
    import transformers

    index = json.loads((folder / "model_index.json").read_text())
    components: dict = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        library, class_name = entry
        sub = folder / name
        if name == "scheduler":
            components[name] = _read_scheduler_config(sub)
            continue
        if class_name not in _ALLOWED_CLASSES.get(library, set()):
            if name in ("safety_checker", "feature_extractor", "image_encoder"):
                continue  # optional parts limner does not use
            raise ModelLoadError(
                f"{folder}: component {name!r} has unsupported class {library}.{class_name}"
            )
        module = diffusers if library == "diffusers" else transformers
        cls = getattr(module, class_name)
        if "Tokenizer" in class_name:
            components[name] = cls.from_pretrained(sub, local_files_only=True)
            continue
        weights = list(sub.glob("*.safetensors"))
        if not weights:
            pickles = [p.name for p in sub.iterdir() if p.suffix in (".bin", ".pt", ".ckpt")]
            if pickles:
                raise UnsafeCheckpointError(
                    f"{sub} holds only pickle weights ({', '.join(pickles)}), which limner does not "
                    f"unpickle implicitly: convert each with `limner convert {sub / pickles[0]} "
                    f"{sub / 'model.safetensors'}` (diffusers models: "
                    "diffusion_pytorch_model.safetensors)"
                )
            raise ModelLoadError(f"{sub}: no weights found")
        try:
            components[name] = cls.from_pretrained(
                sub, local_files_only=True, use_safetensors=True, torch_dtype=torch_dtype
            )
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelLoadError(f"could not load {name} from {sub}: {err}") from err
    for needed in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if needed not in components:
            raise ModelLoadError(f"{folder}: the model has no {needed!r} component")
    return components


def _read_scheduler_config(folder: Path) -> dict:
    path = folder / "scheduler_config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: missing scheduler_config.json")
    return json.loads(path.read_text())


def detect_family(components: dict) -> Family:
    """Which conditioning scheme a set of components uses."""
    if components.get("text_encoder_2") is not None:
        return Family.SDXL
    encoder = components["text_encoder"]
    if encoder.config.model_type == "bert":
        return Family.BUILTIN
    return Family.SD2 if encoder.config.hidden_size == 1024 else Family.SD1


def prompt_encoder_for(family: Family, components: dict) -> PromptEncoder:
    if family is Family.SDXL:
        return PromptEncoder(
            [
                TokenEncoder(
                    components["tokenizer"], components["text_encoder"], layer="penultimate"
                ),
                TokenEncoder(
                    components["tokenizer_2"],
                    components["text_encoder_2"],
                    layer="penultimate",
                    pooled=True,
                ),
            ]
        )
    if family is Family.BUILTIN:
        return PromptEncoder(
            [TokenEncoder(components["tokenizer"], components["text_encoder"], attention_mask=True)]
        )
    return PromptEncoder([TokenEncoder(components["tokenizer"], components["text_encoder"])])


def bundle_from_components(
    components: dict,
    *,
    name: str,
    source: Path | None = None,
    family: Family | None = None,
) -> LatentDiffusionModel:
    """Assemble a bundle from diffusers-style components (the scheduler as a config dict
    or a scheduler object)."""
    family = family or detect_family(components)
    scheduler = components["scheduler"]
    config = dict(scheduler if isinstance(scheduler, dict) else scheduler.config)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return LatentDiffusionModel(
        name=name,
        family=family,
        prompt_encoder=prompt_encoder_for(family, components),
        unet=components["unet"],
        vae=components["vae"],
        scheduler_config=config,
        source=source,
        components=components,
        latent_rgb=latent_rgb_for(family, source, components["vae"]),
    )


def latent_rgb_for(family: Family, source: Path | None, vae) -> LatentRGB | None:
    """The preview map of a model: the one stored with its VAE (a diffusers folder's
    vae/latent_rgb.json), else Stable Diffusion's for the SD families, else none."""
    if source is not None and Path(source).is_dir():
        stored = load_latent_rgb(Path(source) / "vae")
        if stored is not None and stored.channels == vae.config.latent_channels:
            return stored
    if family is not Family.BUILTIN and vae.config.latent_channels == SD_LATENT_RGB.channels:
        return SD_LATENT_RGB
    return None
