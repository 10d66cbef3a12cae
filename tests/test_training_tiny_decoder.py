"""`limner train tiny-decoder`: distillation from a VAE on a folder of images or an emoji
dataset, exact resume, export in TAESD's layout, and generation decoding with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from limner.errors import InvalidRequestError
from limner.runtime.tiny_decoder import load_tiny_decoder, save_tiny_decoder
from limner.training.common import load_checkpoint, read_log
from limner.training.tiny_decoder import TinyDecoderTrainConfig
from tiny_models import make_image, tiny_vae


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vae") / "vae"
    tiny_vae().save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for k in range(6):
        make_image(48, seed=k).save(folder / f"{k}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _config(images: Path, vae: Path, run_dir: Path, steps: int) -> TinyDecoderTrainConfig:
    return TinyDecoderTrainConfig(
        data=str(images),
        run_dir=str(run_dir),
        vae=str(vae),
        steps=steps,
        batch_size=2,
        crop=32,
        lr=3e-3,
        checkpoint_every=3,
        sample_every=6,
        log_every=1,
        quiet=True,
    )


@pytest.fixture(scope="module")
def trained(images, vae_folder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from limner.training import tiny_decoder_loop

    run_dir = tmp_path_factory.mktemp("run")
    tiny_decoder_loop.train(_config(images, vae_folder, run_dir, steps=12))
    return run_dir


def test_distillation_lowers_the_loss_and_draws_samples(trained):
    losses = [r["loss"] for r in read_log(trained)]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert (trained / "samples" / "step-000012.png").is_file()


def test_resume_continues_exactly(images, vae_folder, trained, tmp_path):
    from limner.training import tiny_decoder_loop

    tiny_decoder_loop.train(_config(images, vae_folder, tmp_path, steps=6))
    tiny_decoder_loop.train(_config(images, vae_folder, tmp_path, steps=12), resume=True)
    resumed, straight = load_checkpoint(tmp_path)["model"], load_checkpoint(trained)["model"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_export_writes_a_taesd_file_of_the_ema_weights(trained, tmp_path):
    from limner.training import tiny_decoder_loop

    path = tiny_decoder_loop.export(trained, tmp_path / "taesd_decoder.safetensors")
    decoder = load_tiny_decoder(path)
    assert decoder.config.latent_channels == 4 and decoder.config.upsamples == 1
    ema = load_checkpoint(trained)["ema"]
    shadow = next(v for k, v in ema["shadow"].items() if k.endswith("0.weight"))
    assert any(torch.equal(p.detach(), shadow) for p in decoder.parameters())
    with pytest.raises(InvalidRequestError, match="safetensors"):
        tiny_decoder_loop.export(trained, tmp_path / "decoder.bin")


def test_bad_input_is_refused_clearly(images, vae_folder, tmp_path):
    from limner.training import tiny_decoder_loop
    from limner.training.tiny_decoder_loop import build_student

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidRequestError, match="no PNG, JPEG or WebP"):
        tiny_decoder_loop.train(_config(empty, vae_folder, tmp_path / "r1", steps=1))
    bad_crop = _config(images, vae_folder, tmp_path / "r2", steps=1)
    bad_crop.crop = 30
    with pytest.raises(InvalidRequestError, match="multiple of 8"):
        tiny_decoder_loop.train(bad_crop)
    # A decoder for 8x latents cannot start a run for this 2x VAE.
    from limner.runtime.tiny_decoder import TinyDecoderConfig

    other = save_tiny_decoder(TinyDecoderConfig().build(), tmp_path / "sd.safetensors")
    with pytest.raises(InvalidRequestError, match="the VAE needs"):
        build_student(tiny_vae(), str(other))


def test_command_on_the_emoji_data_and_generation_with_the_result(tmp_path):
    """The built-in VAE as teacher, through `limner train tiny-decoder`; the exported file
    then decodes a built-in generation (`--fast-decode`)."""
    from limner import api
    from limner.cli import main
    from limner.data.emoji import build_emoji_dataset
    from limner.runtime.device import RuntimeOptions

    data = build_emoji_dataset(tmp_path / "ds", train_size=8, heldout_size=2, seed=4)
    run = tmp_path / "run"
    common = ["train", "tiny-decoder", "--data", str(data), "--run-dir", str(run)]
    assert main([*common, "--steps", "2", "--crop", "32", "--batch-size", "2", "--quiet"]) == 0
    out = tmp_path / "taesd_decoder.safetensors"
    assert main([*common, "--export", str(out)]) == 0
    runtime = RuntimeOptions(tiny_decoder=str(out), fast_decode=True)
    image = api.generate(api.GenerationRequest(prompt="a cat", steps=2, seed=1), runtime=runtime)
    assert image[0].image.size == (128, 128)
