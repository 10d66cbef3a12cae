"""The diffusers <-> original key table (limner.checkpoints.sd_keys*)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)

from limner.checkpoints.component_configs import default_component_configs, read_config
from limner.checkpoints.sd_extras import DDPM_BUFFER_NAMES, ddpm_schedule_buffers
from limner.checkpoints.sd_keys import (
    KeyMapping,
    build_key_table,
    from_original,
    normalize_original_keys,
    to_original,
)
from limner.checkpoints.sd_keys_clip import open_clip_key_to_original
from limner.checkpoints.sd_keys_unet import unet_key_to_original
from limner.checkpoints.sd_keys_vae import vae_key_to_original
from limner.checkpoints.single_file import ArchInfo, _empty_model, to_original_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "sd15_keys.txt"


def read_key_fixture(path: Path) -> dict[str, tuple[int, ...]]:
    """Parse "@prefix P" sections of "name [d0,d1,...]" lines into full key -> shape."""
    keys: dict[str, tuple[int, ...]] = {}
    prefix = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw or raw.startswith("#"):
            continue
        if raw.startswith("@prefix"):
            prefix = raw[len("@prefix") :].strip()
            continue
        name, shape = raw.rsplit(" ", 1)
        dims = shape.strip("[]")
        keys[prefix + name] = tuple(int(d) for d in dims.split(",")) if dims else ()
    return keys


def _meta_components(arch: ArchInfo) -> dict[str, torch.nn.Module]:
    configs = default_component_configs(arch)
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if arch.family == "sdxl" else [])
    return {name: _empty_model(name, configs[name]) for name in names}


@pytest.mark.parametrize(
    ("diffusers_key", "original"),
    [
        ("conv_in.weight", "input_blocks.0.0.weight"),
        ("time_embedding.linear_2.bias", "time_embed.2.bias"),
        ("down_blocks.0.resnets.1.norm1.weight", "input_blocks.2.0.in_layers.0.weight"),
        ("down_blocks.0.downsamplers.0.conv.weight", "input_blocks.3.0.op.weight"),
        ("down_blocks.1.resnets.0.conv_shortcut.bias", "input_blocks.4.0.skip_connection.bias"),
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
        ),
        ("down_blocks.3.resnets.1.time_emb_proj.weight", "input_blocks.11.0.emb_layers.1.weight"),
        ("mid_block.attentions.0.proj_in.weight", "middle_block.1.proj_in.weight"),
        ("mid_block.resnets.1.conv2.weight", "middle_block.2.out_layers.3.weight"),
        ("up_blocks.0.resnets.2.conv1.weight", "output_blocks.2.0.in_layers.2.weight"),
        ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),
        ("up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias"),
        ("up_blocks.3.attentions.2.norm.weight", "output_blocks.11.1.norm.weight"),
        ("conv_norm_out.weight", "out.0.weight"),
        ("conv_out.bias", "out.2.bias"),
    ],
)
def test_sd1_unet_names(diffusers_key: str, original: str) -> None:
    assert unet_key_to_original(diffusers_key, read_config("sd1/unet.json")) == original


def test_sdxl_unet_names() -> None:
    config = read_config("sdxl/unet.json")
    assert unet_key_to_original("add_embedding.linear_1.weight", config) == "label_emb.0.0.weight"
    # Level 0 has no attention: its downsampler is input_blocks.3, level 1 starts at 4.
    assert unet_key_to_original("down_blocks.0.downsamplers.0.conv.weight", config) == (
        "input_blocks.3.0.op.weight"
    )
    assert unet_key_to_original(
        "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2.weight", config
    ) == ("input_blocks.8.1.transformer_blocks.9.ff.net.2.weight")
    assert unet_key_to_original("up_blocks.0.upsamplers.0.conv.weight", config) == (
        "output_blocks.2.2.conv.weight"
    )
    assert unet_key_to_original("up_blocks.2.resnets.2.conv2.bias", config) == (
        "output_blocks.8.0.out_layers.3.bias"
    )


def test_vae_names() -> None:
    config = read_config("sd1/vae.json")
    assert vae_key_to_original("decoder.up_blocks.0.resnets.0.conv1.weight", config) == (
        "decoder.up.3.block.0.conv1.weight",
        "copy",
    )
    assert vae_key_to_original("decoder.up_blocks.2.upsamplers.0.conv.bias", config) == (
        "decoder.up.1.upsample.conv.bias",
        "copy",
    )
    assert vae_key_to_original("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", config) == (
        "encoder.down.1.block.0.nin_shortcut.weight",
        "copy",
    )
    assert vae_key_to_original("encoder.mid_block.attentions.0.to_out.0.weight", config) == (
        "encoder.mid.attn_1.proj_out.weight",
        "conv1x1",
    )
    assert vae_key_to_original("decoder.mid_block.attentions.0.to_q.bias", config) == (
        "decoder.mid.attn_1.q.bias",
        "copy",
    )
    assert vae_key_to_original("decoder.conv_norm_out.weight", config) == (
        "decoder.norm_out.weight",
        "copy",
    )


def test_open_clip_names() -> None:
    assert open_clip_key_to_original("embeddings.position_embedding.weight") == (
        "positional_embedding",
        "copy",
    )
    assert open_clip_key_to_original("text_model.encoder.layers.3.self_attn.k_proj.bias") == (
        "transformer.resblocks.3.attn.in_proj_bias",
        "qkv",
    )
    assert open_clip_key_to_original("encoder.layers.0.mlp.fc2.weight") == (
        "transformer.resblocks.0.mlp.c_proj.weight",
        "copy",
    )
    assert open_clip_key_to_original("text_projection.weight") == ("text_projection", "transpose")
    with pytest.raises(ValueError):
        open_clip_key_to_original("encoder.layers.0.mystery.weight")


def test_ops_round_trip_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 4, generator=generator) for _ in range(3))
    linear, projection = (
        torch.randn(5, 5, generator=generator),
        torch.randn(3, 7, generator=generator),
    )
    table = [
        KeyMapping("a.in_proj_weight", "te", ("q.weight", "k.weight", "v.weight"), "qkv"),
        KeyMapping("a.q.weight", "vae", ("to_q.weight",), "conv1x1"),
        KeyMapping("a.text_projection", "te", ("text_projection.weight",), "transpose"),
    ]
    components = {
        "te": {"q.weight": q, "k.weight": k, "v.weight": v, "text_projection.weight": projection},
        "vae": {"to_q.weight": linear},
    }
    original = to_original(table, components)
    assert torch.equal(original["a.in_proj_weight"], torch.cat([q, k, v]))
    assert original["a.q.weight"].shape == (5, 5, 1, 1)
    assert torch.equal(original["a.text_projection"], projection.t())
    back, missing, unused = from_original(table, {**original, "betas": torch.ones(3)})
    assert not missing and list(unused) == ["betas"]
    for component, state in components.items():
        for key, tensor in state.items():
            assert torch.equal(back[component][key], tensor)


def test_old_sd1_text_key_spelling_is_accepted() -> None:
    old = {"cond_stage_model.transformer.embeddings.token_embedding.weight": torch.zeros(1)}
    assert list(normalize_original_keys(old)) == [
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    ]


def test_full_size_sd15_export_matches_real_checkpoint_keys() -> None:
    """Key set and shapes of our SD 1.5 export == those of v1-5-pruned-emaonly (fixture)."""
    reference = read_key_fixture(FIXTURE)
    assert len(reference) == 1145
    ours = to_original_state_dict(_meta_components(ArchInfo("sd1")), ArchInfo("sd1"))
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {k: tuple(v.shape) for k, v in ours.items()} == reference


def test_full_size_sd15_inpainting_only_changes_first_conv() -> None:
    arch = ArchInfo("sd1", inpainting=True)
    ours = to_original_state_dict(_meta_components(arch), arch)
    reference = read_key_fixture(FIXTURE)
    assert set(ours) == set(reference)
    different = {k for k in ours if tuple(ours[k].shape) != reference[k]}
    assert different == {"model.diffusion_model.input_blocks.0.0.weight"}
    assert tuple(ours["model.diffusion_model.input_blocks.0.0.weight"].shape) == (320, 9, 3, 3)


@pytest.mark.parametrize(
    "arch",
    [ArchInfo("sdxl"), ArchInfo("sd2", prediction_type="v_prediction")],
    ids=lambda arch: arch.modelspec_architecture,
)
def test_full_size_export_matches_diffusers_conversion(arch: ArchInfo) -> None:
    """Run diffusers' own LDM -> diffusers converters over our full-size (meta) export.

    No complete key list of sd_xl_base_1.0 / v2-1_768-ema-pruned is committed here; instead
    diffusers' independent conversion code must find every tensor it needs in our file, under
    the names it expects, with the shapes the diffusers models have.
    """
    components = _meta_components(arch)
    exported = to_original_state_dict(components, arch)
    converted = {
        "unet": convert_ldm_unet_checkpoint(dict(exported), components["unet"].config),
        "vae": convert_ldm_vae_checkpoint(dict(exported), components["vae"].config),
    }
    if arch.family == "sdxl":
        converted["text_encoder"] = convert_ldm_clip_checkpoint(
            dict(exported), "conditioner.embedders.0.transformer."
        )
        converted["text_encoder_2"] = convert_open_clip_checkpoint(
            components["text_encoder_2"], dict(exported), prefix="conditioner.embedders.1.model."
        )
        counts = {"model.diffusion_model.": 1680, "conditioner.embedders.1.model.": 389}
    else:
        converted["text_encoder"] = convert_open_clip_checkpoint(
            components["text_encoder"], dict(exported), prefix="cond_stage_model.model."
        )
        counts = {"model.diffusion_model.": 686, "cond_stage_model.model.": 280}
    for name, state in converted.items():
        expected = components[name].state_dict()
        # diffusers passes the old non-persistent position_ids buffer through; the model drops it
        state = {
            k.removeprefix("text_model."): v
            for k, v in state.items()
            if not k.endswith("embeddings.position_ids")
        }
        expected = {k.removeprefix("text_model."): v for k, v in expected.items()}
        assert set(state) == set(expected), name
        assert all(tuple(state[k].shape) == tuple(expected[k].shape) for k in expected), name
    for prefix, count in counts.items():
        assert sum(key.startswith(prefix) for key in exported) == count


def test_ddpm_buffers_match_diffusers_schedule() -> None:
    config = read_config("sd1/scheduler.json")
    buffers = ddpm_schedule_buffers(config)
    assert tuple(buffers) == DDPM_BUFFER_NAMES
    reference = DDPMScheduler(
        beta_start=config["beta_start"], beta_end=config["beta_end"], beta_schedule="scaled_linear"
    )
    torch.testing.assert_close(buffers["alphas_cumprod"], reference.alphas_cumprod)
    torch.testing.assert_close(buffers["betas"], reference.betas)
    assert buffers["alphas_cumprod_prev"][0] == 1.0
    assert buffers["posterior_variance"][0] == 0.0
    assert torch.isfinite(buffers["posterior_log_variance_clipped"]).all()
    # DDPM posterior mean: coef1 * x0 + coef2 * x_t, coefficients of eq. 7 in Ho et al.
    t = 500
    ac, ac_prev = buffers["alphas_cumprod"][t], buffers["alphas_cumprod_prev"][t]
    torch.testing.assert_close(
        buffers["posterior_mean_coef1"][t], buffers["betas"][t] * ac_prev.sqrt() / (1 - ac)
    )


def test_table_is_a_bijection_for_every_family() -> None:
    for arch in (ArchInfo("sd1"), ArchInfo("sd2"), ArchInfo("sdxl")):
        components = _meta_components(arch)
        table = build_key_table(
            arch.family,
            {name: list(model.state_dict()) for name, model in components.items()},
            unet_config=components["unet"].config,
            vae_config=components["vae"].config,
        )
        originals = [row.original for row in table]
        assert len(originals) == len(set(originals))
        covered = {(row.component, key) for row in table for key in row.diffusers}
        expected = {(n, k) for n, m in components.items() for k in m.state_dict()}
        assert covered == expected
