"""Shared fixtures: a private limner home for every test, and tiny models on disk.

The tiny SD 1.x- and SDXL-shaped components of `tiny_models` are written once per session
as diffusers-format folders (safetensors weights, a model_index.json written here), then
linked into each test's `$LIMNER_HOME/models/` so that `--model tiny-sd1` resolves as it
would for a user. The link keeps the folder's real path the same in every test, so
`limner.api.load`'s one-model cache (keyed by that path) serves them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny_models import sd1_components, sdxl_components

_LIBRARIES = {
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}


def save_diffusers_folder(components: dict, folder: Path, *, pipeline_class: str) -> Path:
    """Write components as a diffusers-format model folder (safetensors weights only)."""
    folder.mkdir(parents=True)
    index: dict = {"_class_name": pipeline_class, "_diffusers_version": "0.35.0"}
    for name, part in components.items():
        index[name] = _LIBRARIES[name]
        if name == "scheduler":
            (folder / name).mkdir()
            (folder / name / "scheduler_config.json").write_text(json.dumps(part, indent=1))
        elif name.startswith("tokenizer"):
            part.save_pretrained(folder / name)
        else:
            part.save_pretrained(folder / name, safe_serialization=True)
    if pipeline_class == "StableDiffusionPipeline":
        index.update(safety_checker=[None, None], feature_extractor=[None, None])
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


@pytest.fixture(autouse=True)
def limner_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty limner home (models/, outputs/, cache/)."""
    home = tmp_path / "limner-home"
    monkeypatch.setenv("LIMNER_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_sd1_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    components = sd1_components(root / "scratch-sd1")
    return save_diffusers_folder(
        components, root / "tiny-sd1", pipeline_class="StableDiffusionPipeline"
    )


@pytest.fixture(scope="session")
def tiny_sdxl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    components = sdxl_components(root / "scratch-sdxl")
    return save_diffusers_folder(
        components, root / "tiny-sdxl", pipeline_class="StableDiffusionXLPipeline"
    )


def _register(home: Path, folder: Path) -> str:
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / folder.name).symlink_to(folder, target_is_directory=True)
    return folder.name


@pytest.fixture
def tiny_sd1(limner_home: Path, tiny_sd1_folder: Path) -> str:
    """The name under which the tiny SD 1.x model is registered in this test's home."""
    return _register(limner_home, tiny_sd1_folder)


@pytest.fixture
def tiny_sdxl(limner_home: Path, tiny_sdxl_folder: Path) -> str:
    """The name under which the tiny SDXL model is registered in this test's home."""
    return _register(limner_home, tiny_sdxl_folder)
