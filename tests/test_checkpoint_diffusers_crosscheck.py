"""Our exported files, read by diffusers' own single-file loader (an independent implementation).

diffusers converts original-layout checkpoints with its own code
(``diffusers.loaders.single_file_utils``). If it reads our export back to exactly the weights
we wrote, our layout is the one the ecosystem expects. Everything runs offline: the configs
come from a local folder and ``local_files_only=True``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it, when this runs first

from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from limner.checkpoints.single_file import ArchInfo, export_single_file
from limner.checkpoints.tiny import build_tiny_components, single_threaded

BUNDLES = {
    "sd1": ArchInfo("sd1"),
    "sd2-v": ArchInfo("sd2", prediction_type="v_prediction"),
    "sdxl": ArchInfo("sdxl"),
    "sd1-inpainting": ArchInfo("sd1", inpainting=True),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with single_threaded():
        yield


def _assert_equal_state(expected: torch.nn.Module, actual: torch.nn.Module, name: str) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    assert want.keys() == got.keys(), name
    for key in want:
        assert not got[key].is_meta, f"{name}.{key} was not loaded"
        assert torch.equal(want[key], got[key].to(want[key].dtype)), f"{name}.{key}"


def _export(arch: ArchInfo, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    components = build_tiny_components(arch, seed=2)
    path = tmp_path / "exported.safetensors"
    export_single_file(components, path, arch=arch)
    return components, path


@pytest.mark.parametrize("name", list(BUNDLES))
def test_diffusers_model_loaders_read_our_unet_and_vae(name: str, tmp_path: Path) -> None:
    components, path = _export(BUNDLES[name], tmp_path)
    config_dir = tmp_path / "config"
    components["unet"].save_config(config_dir / "unet")
    components["vae"].save_config(config_dir / "vae")
    unet = UNet2DConditionModel.from_single_file(
        str(path), config=str(config_dir), subfolder="unet", local_files_only=True
    )
    vae = AutoencoderKL.from_single_file(
        str(path), config=str(config_dir), subfolder="vae", local_files_only=True
    )
    _assert_equal_state(components["unet"], unet, "unet")
    _assert_equal_state(components["vae"], vae, "vae")


@pytest.mark.parametrize("name", ["sd1", "sd2-v", "sdxl"])
def test_diffusers_pipeline_loader_reads_our_text_encoders(name: str, tmp_path: Path) -> None:
    arch = BUNDLES[name]
    components, path = _export(arch, tmp_path)
    if arch.family == "sdxl":
        pipeline_cls: Any = StableDiffusionXLPipeline
        parts = ["vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet"]
        extra: dict[str, Any] = {}
    else:
        pipeline_cls = StableDiffusionPipeline
        parts = ["vae", "text_encoder", "tokenizer", "unet"]
        extra = {
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
    # A local diffusers folder supplies configs and tokenizers; weights come from our file.
    template = pipeline_cls(
        **{part: components[part] for part in parts}, scheduler=components["scheduler"], **extra
    )
    template.save_pretrained(tmp_path / "pipeline")
    pipeline = pipeline_cls.from_single_file(
        str(path), config=str(tmp_path / "pipeline"), local_files_only=True
    )
    for part in ("text_encoder", "text_encoder_2", "unet", "vae"):
        if part in components:
            _assert_equal_state(components[part], getattr(pipeline, part), part)
