"""Latent-to-RGB preview maps: fitting, files, which model gets which, and the built-in
model's shipped map matching its VAE."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from limner.data.emoji import build_emoji_dataset
from limner.errors import ModelLoadError
from limner.jobs.preview import latent_preview
from limner.models.builtin import builtin_dir
from limner.models.latent_rgb import (
    FILE_NAME,
    SD_LATENT_RGB,
    LatentRGB,
    fit_latent_rgb,
    load_latent_rgb,
    save_latent_rgb,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("emoji") / "ds"
    return str(build_emoji_dataset(out, train_size=48, heldout_size=4, seed=11))


def test_fit_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    true = LatentRGB(
        weights=tuple(tuple(rng.normal(size=3).round(3)) for _ in range(4)),
        bias=(0.1, -0.2, 0.05),
    )
    latents = rng.normal(size=(6, 4, 5, 7)).astype(np.float32)
    pixels = np.stack([np.moveaxis(true.apply(z), -1, 0) for z in latents])
    fitted = fit_latent_rgb(latents, pixels)
    assert np.allclose(fitted.weights, true.weights, atol=1e-4)
    assert np.allclose(fitted.bias, true.bias, atol=1e-4)
    with pytest.raises(ValueError):
        fit_latent_rgb(latents, pixels[:, :, :4])


def test_file_round_trip_and_bad_files(tmp_path):
    save_latent_rgb(SD_LATENT_RGB, tmp_path)
    assert load_latent_rgb(tmp_path) == SD_LATENT_RGB
    assert load_latent_rgb(tmp_path / "none") is None
    for bad in ('{"weights": [[1, 2]]}', '{"weights": [[1, 2, NaN]]}', "[1, 2", '{"bias": []}'):
        (tmp_path / FILE_NAME).write_text(bad)
        with pytest.raises(ModelLoadError, match=FILE_NAME):
            load_latent_rgb(tmp_path)


def test_preview_uses_the_map_it_is_given():
    latent = np.random.default_rng(1).normal(size=(1, 4, 4, 4)).astype(np.float32)
    flat = LatentRGB(weights=((0.0, 0.0, 0.0),) * 4, bias=(1.0, -1.0, 0.0))
    pixels = np.asarray(latent_preview(latent, 4, flat))
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1] == 0).all()
    assert (np.abs(pixels[..., 2].astype(int) - 128) <= 1).all()
    # Without a map: the channels min-max normalised, not SD's colours.
    assert np.asarray(latent_preview(latent, 4)).std() > 0


def test_models_carry_their_map(tiny_sd1, tiny_sd1_folder, tmp_path):
    from limner import api
    from limner.models.latent import Family
    from limner.models.loading import latent_rgb_for

    assert api.load(tiny_sd1).latent_rgb == SD_LATENT_RGB
    assert api.load(None).latent_rgb == load_latent_rgb(builtin_dir() / "vae") is not None
    # A diffusers folder's own map wins over the family's.
    own = LatentRGB(weights=((0.5, 0.0, 0.0),) * 4)
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd1_folder, folder)
    save_latent_rgb(own, folder / "vae")
    vae = api.load(tiny_sd1).vae
    assert latent_rgb_for(Family.SD1, folder, vae) == own
    assert latent_rgb_for(Family.BUILTIN, None, vae) is None


def _preview_error(rgb: LatentRGB, vae, images: list[np.ndarray]) -> float:
    from limner.training.common import images_tensor

    x = images_tensor(images)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    z = ((z - vae.config.shift_factor) * vae.config.scaling_factor).numpy()
    target = torch.nn.functional.avg_pool2d(x, 8).numpy()
    return float(
        np.mean(
            [
                np.abs(rgb.apply(a) - np.moveaxis(b, 0, -1)).mean()
                for a, b in zip(z, target, strict=True)
            ]
        )
    )


def test_shipped_builtin_map_fits_the_shipped_vae(dataset):
    """Guards against shipping a new VAE without refitting its map
    (`limner train preview-map --data DIR`)."""
    from diffusers import AutoencoderKL

    from limner.training.data import SceneBatches

    vae = AutoencoderKL.from_pretrained(builtin_dir() / "vae", local_files_only=True).float()
    images = SceneBatches(dataset, "train").images(range(32))
    shipped = load_latent_rgb(builtin_dir() / "vae")
    assert shipped is not None
    error, sd_error = (
        _preview_error(shipped, vae, images),
        _preview_error(SD_LATENT_RGB, vae, images),
    )
    assert error < 0.2 and error < sd_error / 2  # measured: 0.11 vs SD's 0.56


def test_preview_map_command_fits_and_writes(dataset, tmp_path, capsys):
    from limner.cli import main

    folder = tmp_path / "vae"
    shutil.copytree(builtin_dir() / "vae", folder, ignore=shutil.ignore_patterns(FILE_NAME))
    assert (
        main(["train", "preview-map", "--data", dataset, "--vae", str(folder), "--count", "16"])
        == 0
    )
    fitted = load_latent_rgb(folder)
    assert fitted is not None and fitted.channels == 4
    assert json.loads((folder / FILE_NAME).read_text())["weights"]
    assert main(["train", "preview-map", "--data", dataset, "--vae", str(tmp_path / "none")]) != 0
    assert "no diffusers VAE folder" in capsys.readouterr().err
