"""The built-in model's package folder: configs, and weights only when both parts ship."""

from __future__ import annotations

import json
import shutil

import pytest

from limner.models import builtin


@pytest.fixture
def configs_only(tmp_path, monkeypatch):
    folder = tmp_path / "builtin"
    shutil.copytree(builtin.builtin_dir(), folder, ignore=shutil.ignore_patterns("unet", "vae"))
    monkeypatch.setattr(builtin, "builtin_dir", lambda: folder)
    return folder


def test_configs_describe_a_small_8x_4_channel_model():
    folder = builtin.builtin_dir()
    vae = json.loads((folder / "vae_config.json").read_text())
    unet = json.loads((folder / "unet_config.json").read_text())
    assert vae["latent_channels"] == unet["in_channels"] == 4
    assert 2 ** (len(vae["block_out_channels"]) - 1) == 8
    assert unet["sample_size"] * 8 == vae["sample_size"] == 128
    assert unet["cross_attention_dim"] == 384  # MiniLM's hidden size


def test_placeholder_is_used_and_announced_without_weights(configs_only):
    assert not builtin.has_trained_weights()
    with pytest.warns(UserWarning, match="no trained weights"):
        model = builtin.load_builtin()
    assert model.unet.config.block_out_channels == list(
        json.loads((configs_only / "unet_config.json").read_text())["block_out_channels"]
    )


def test_weights_count_only_when_both_unet_and_vae_ship(configs_only):
    (configs_only / "unet").mkdir()
    (configs_only / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert not builtin.has_trained_weights()
    (configs_only / "vae").mkdir()
    (configs_only / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert builtin.has_trained_weights()
