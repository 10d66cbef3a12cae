"""The tiny (TAESD-format) decoder: both published layouts load, files we write are in
the original layout, distillation from a VAE learns, and generation can decode with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from safetensors.torch import load_file, save_file

from limner import api
from limner.checkpoints.tiny import single_threaded
from limner.errors import InputFileError, ModelLoadError
from limner.runtime.device import RuntimeOptions
from limner.runtime.tiny_decoder import (
    TinyDecoderConfig,
    config_for_vae,
    distill_tiny_decoder,
    load_tiny_decoder,
    preview_image,
    save_tiny_decoder,
)
from tiny_models import tiny_vae


def _randomised(config: TinyDecoderConfig, seed: int = 0):
    torch.manual_seed(seed)
    decoder = config.build()
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return decoder.eval()


def test_saved_file_has_taesd_original_layout_and_loads_back(tmp_path):
    decoder = _randomised(TinyDecoderConfig())
    path = save_tiny_decoder(decoder, tmp_path / "taesd_decoder.safetensors")
    keys = set(load_file(path))
    # index 0 is the clamp (no parameters), 1 the input conv, 19 the RGB conv
    assert "1.weight" in keys and "19.weight" in keys and "19.bias" in keys
    assert "3.conv.0.weight" in keys and "3.conv.4.weight" in keys
    assert "7.weight" in keys and "7.bias" not in keys  # bias-free conv after upsampling
    assert not any(k.startswith("0.") for k in keys)
    loaded = load_tiny_decoder(path)
    assert loaded.config == TinyDecoderConfig(latent_channels=4, upsamples=3)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents), decoder(latents))
        assert loaded(latents).shape == (1, 3, 64, 64)


def test_diffusers_autoencoder_tiny_layout_loads(tmp_path):
    torch.manual_seed(1)
    tiny = AutoencoderTiny().eval()  # diffusers' TAESD, SD defaults
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, path)
    loaded = load_tiny_decoder(path)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = tiny.decode(latents).sample
        torch.testing.assert_close(loaded(latents), expected)


def test_shape_follows_the_vae_and_other_scale_factors_load(tmp_path):
    vae = tiny_vae()  # two levels: scale factor 2
    config = config_for_vae(vae)
    assert config == TinyDecoderConfig(latent_channels=4, upsamples=1)
    path = save_tiny_decoder(_randomised(config), tmp_path / "f2.safetensors")
    assert load_tiny_decoder(path).config.upsamples == 1


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(InputFileError):
        load_tiny_decoder(tmp_path / "missing.safetensors")
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelLoadError, match="TAESD"):
        load_tiny_decoder(path)


def test_distillation_learns_the_vae_decoder():
    torch.manual_seed(0)
    vae = tiny_vae().eval()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(2)]
    with single_threaded():  # toy sizes: threads only add synchronisation
        student, report = distill_tiny_decoder(vae, batches, steps=30, lr=3e-3)
    assert report.steps == 30
    assert report.last_loss < 0.6 * report.first_loss
    with torch.no_grad():
        target = vae.decode(batches[0] / vae.config.scaling_factor).sample.clamp(-1, 1)
        assert student(batches[0]).shape == target.shape


def test_generate_with_fast_decode_and_preview(tiny_sd1, tmp_path):
    model = api.load(tiny_sd1, runtime=RuntimeOptions.reference())
    decoder = _randomised(config_for_vae(model.vae))
    path = save_tiny_decoder(decoder, tmp_path / "tiny.safetensors")
    request = api.GenerationRequest(prompt="a red apple", model=tiny_sd1, steps=3, seed=2)
    full = api.generate(request, runtime=RuntimeOptions.reference())[0].image
    latents = []
    fast = api.generate(
        request,
        runtime=RuntimeOptions(
            precision="fp32", channels_last=False, tiny_decoder=str(path), fast_decode=True
        ),
        on_progress=lambda p: latents.append(p.step.latents),
    )[0].image
    assert fast.size == full.size
    assert not np.array_equal(np.asarray(fast), np.asarray(full))  # another decoder ran
    with torch.no_grad():
        expected = decoder(latents[-1]).clamp(-1, 1)
    pixels = (np.asarray(fast).astype(np.float32) / 127.5) - 1
    assert np.abs(pixels - expected[0].permute(1, 2, 0).numpy()).max() < 2 / 255 + 1e-6
    preview = preview_image(decoder, latents[0])
    assert preview.size == full.size
