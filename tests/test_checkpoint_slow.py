"""Full-size SD 1.5 with random weights: export, load back, same outputs (slow: ~4 GB file)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from limner.checkpoints.component_configs import default_component_configs, load_clip_tokenizer
from limner.checkpoints.safe_load import read_safetensors_shapes
from limner.checkpoints.single_file import ArchInfo, export_single_file, load_single_file


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB


@pytest.mark.slow
def test_full_size_sd15_export_load_same_outputs(tmp_path: Path) -> None:
    arch = ArchInfo("sd1")
    configs = default_component_configs(arch)
    torch.manual_seed(0)
    start = time.perf_counter()
    components = {
        "unet": UNet2DConditionModel.from_config(configs["unet"]).eval(),
        "vae": AutoencoderKL.from_config(configs["vae"]).eval(),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"])).eval(),
    }
    built = time.perf_counter()
    path = tmp_path / "sd15-random.safetensors"
    assert export_single_file(components, path, arch=arch) == 1145
    exported = time.perf_counter()
    assert len(read_safetensors_shapes(path)) == 1145
    loaded = load_single_file(path)  # the shipped full-size configs, no overrides
    done = time.perf_counter()
    assert loaded.arch == arch

    for name, model in components.items():
        want, got = model.state_dict(), loaded.components[name].state_dict()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[key], got[key]) for key in want), name

    tokens = load_clip_tokenizer()(
        "a photo of an astronaut riding a horse",
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    ).input_ids
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    image = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    with torch.no_grad():
        context = components["text_encoder"](tokens).last_hidden_state
        assert torch.equal(context, loaded.components["text_encoder"](tokens).last_hidden_state)
        noise = components["unet"](latents, 999, encoder_hidden_states=context).sample
        again = loaded.components["unet"](latents, 999, encoder_hidden_states=context).sample
        assert torch.equal(noise, again)
        decoded = components["vae"].decode(latents).sample
        assert torch.equal(decoded, loaded.components["vae"].decode(latents).sample)
        moments = components["vae"].encode(image).latent_dist.mean
        assert torch.equal(moments, loaded.components["vae"].encode(image).latent_dist.mean)
    print(
        f"\nfull-size SD1.5: build {built - start:.1f}s, export {exported - built:.1f}s "
        f"({path.stat().st_size / 2**30:.2f} GiB), load {done - exported:.1f}s, "
        f"forward checks {time.perf_counter() - done:.1f}s, peak RSS {_peak_rss_gib():.1f} GiB"
    )
    del components, loaded

    # The same file through the public path a user takes: registered by name, listed with
    # its architecture, and generating through `limner generate --model NAME`.
    from limner import api, cli

    registered = Path(os.environ["LIMNER_HOME"]) / "models" / "sd15-random.safetensors"
    registered.parent.mkdir(parents=True, exist_ok=True)
    registered.symlink_to(path)
    listed = {m.name: m for m in api.list_models()}
    assert listed["sd15-random"].architecture == "stable-diffusion-v1"
    out = tmp_path / "full.png"
    args = ["generate", "a red apple", "--model", "sd15-random", "-W", "64", "-H", "64"]
    assert cli.main([*args, "--steps", "2", "--seed", "3", "-o", str(out)]) == 0
    info = api.image_info(out)
    assert info.settings["Model"] == "sd15-random" and info.settings["Size"] == "64x64"
    assert info.settings["Model hash"] == listed["sd15-random"].short_hash
    api._cache.clear()
