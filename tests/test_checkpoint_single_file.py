"""Export / load round trips and architecture detection (limner.checkpoints.single_file)."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from limner.checkpoints import single_file
from limner.checkpoints.safe_load import (
    load_state_dict,
    read_safetensors_metadata,
    read_safetensors_shapes,
)
from limner.checkpoints.single_file import (
    ArchInfo,
    SingleFileModel,
    detect_architecture,
    export_single_file,
    load_single_file,
)
from limner.checkpoints.tiny import build_tiny_components, single_threaded, tiny_component_configs
from limner.errors import InvalidRequestError, ModelLoadError, UnsafeCheckpointError

MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")
BUNDLES = {
    "sd1": ArchInfo("sd1"),
    "sd2-v": ArchInfo("sd2", prediction_type="v_prediction"),
    "sdxl": ArchInfo("sdxl"),
    "sd1-inpainting": ArchInfo("sd1", inpainting=True),
    "sd2-inpainting": ArchInfo("sd2", inpainting=True),
    "sdxl-inpainting": ArchInfo("sdxl", inpainting=True),
}


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def _assert_same_weights(expected: dict[str, Any], loaded: dict[str, Any]) -> None:
    for name in MODELS:
        if name not in expected:
            assert name not in loaded
            continue
        want, got = expected[name].state_dict(), loaded[name].state_dict()
        assert want.keys() == got.keys(), name
        for key in want:
            assert torch.equal(want[key], got[key]), f"{name}.{key}"


def _export_and_load(
    arch: ArchInfo, tmp_path: Path, **load_kwargs: Any
) -> tuple[dict[str, Any], Path, SingleFileModel]:
    components = build_tiny_components(arch, seed=1)
    path = tmp_path / "model.safetensors"
    export_single_file(components, path, arch=arch)
    loaded = load_single_file(path, component_configs=tiny_component_configs(arch), **load_kwargs)
    return components, path, loaded


@pytest.mark.parametrize("name", list(BUNDLES))
def test_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    arch = BUNDLES[name]
    components, path, loaded = _export_and_load(arch, tmp_path)
    assert loaded.arch == arch
    assert (
        detect_architecture(read_safetensors_shapes(path), read_safetensors_metadata(path)) == arch
    )
    _assert_same_weights(components, loaded.components)
    expected_components = {*MODELS[:3], "tokenizer", "scheduler"}
    if arch.family == "sdxl":
        expected_components |= {"text_encoder_2", "tokenizer_2"}
    assert set(loaded.components) == expected_components
    scheduler = loaded.components["scheduler"]
    assert scheduler.config.prediction_type == arch.prediction_type
    unet = loaded.components["unet"]
    assert unet.config.in_channels == (9 if arch.inpainting else 4)
    assert not any(p.is_meta for model in MODELS[:3] for p in loaded.components[model].parameters())


def test_load_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = ArchInfo("sdxl")
    path = tmp_path / "offline.safetensors"
    export_single_file(build_tiny_components(arch), path, arch=arch)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    loaded = load_single_file(path, component_configs=tiny_component_configs(arch))
    assert loaded.components["tokenizer_2"].pad_token == "!"


def test_round_trip_components_still_work(tmp_path: Path) -> None:
    arch = ArchInfo("sd1")
    components, _, loaded = _export_and_load(arch, tmp_path)
    tokens = loaded.components["tokenizer"](
        "a photo of a cat", padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        context = loaded.components["text_encoder"](tokens).last_hidden_state
        torch.testing.assert_close(
            context, components["text_encoder"](tokens).last_hidden_state, rtol=0, atol=0
        )
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        out = loaded.components["unet"](latents, 10, encoder_hidden_states=context).sample
        ref = components["unet"](latents, 10, encoder_hidden_states=context).sample
        assert torch.equal(out, ref)


def test_export_writes_modelspec_and_ldm_extras(tmp_path: Path) -> None:
    arch = ArchInfo("sd2", prediction_type="v_prediction")
    path = tmp_path / "my-model.safetensors"
    export_single_file(
        build_tiny_components(arch), path, arch=arch, metadata={"modelspec.author": "limner"}
    )
    metadata = read_safetensors_metadata(path)
    assert metadata["modelspec.sai_model_spec"] == "1.0.0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v2-768-v"
    assert metadata["modelspec.prediction_type"] == "v"
    assert metadata["modelspec.title"] == "my-model"
    assert metadata["modelspec.resolution"] == "768x768"
    assert metadata["modelspec.author"] == "limner"
    shapes = read_safetensors_shapes(path)
    assert shapes["alphas_cumprod"] == (1000,)
    assert shapes["model_ema.num_updates"] == ()
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in shapes
    sdxl = tmp_path / "xl.safetensors"
    export_single_file(build_tiny_components(ArchInfo("sdxl")), sdxl, arch=ArchInfo("sdxl"))
    xl_shapes = read_safetensors_shapes(sdxl)
    assert "alphas_cumprod" not in xl_shapes  # sgm checkpoints carry no DDPM buffers
    assert xl_shapes["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] == (
        1,
        77,
    )
    assert read_safetensors_metadata(sdxl)["modelspec.architecture"] == (
        "stable-diffusion-xl-v1-base"
    )


def test_export_dtype_and_overwrite(tmp_path: Path) -> None:
    arch = ArchInfo("sd1")
    components = build_tiny_components(arch)
    path = tmp_path / "half.safetensors"
    export_single_file(components, path, arch=arch, dtype=torch.float16)
    state = load_state_dict(path)
    assert state["model.diffusion_model.out.2.weight"].dtype == torch.float16
    assert state["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == (
        torch.int64
    )
    with pytest.raises(Exception, match="already exists"):
        export_single_file(components, path, arch=arch)
    export_single_file(components, path, arch=arch, overwrite=True)
    loaded = load_single_file(path, component_configs=tiny_component_configs(arch))
    assert loaded.components["unet"].dtype == torch.float32


def test_extras_are_carried_back(tmp_path: Path) -> None:
    """Tensors no component owns (e.g. a real SD 2 file's 24th resblock) survive re-export."""
    arch = ArchInfo("sd2", prediction_type="epsilon")
    path = tmp_path / "sd2.safetensors"
    extra = {
        "cond_stage_model.model.logit_scale": torch.tensor(4.6052),
        "cond_stage_model.model.transformer.resblocks.2.ln_1.weight": torch.ones(32),
        "model_ema.decay": torch.tensor(0.5),
    }
    export_single_file(build_tiny_components(arch), path, arch=arch, extra_tensors=extra)
    loaded = load_single_file(path, component_configs=tiny_component_configs(arch))
    for key, value in extra.items():
        assert torch.equal(loaded.extras[key], value)
    again = tmp_path / "again.safetensors"
    export_single_file(loaded.components, again, arch=loaded.arch, extra_tensors=loaded.extras)
    first, second = load_state_dict(path), load_state_dict(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_ema_weights_are_not_loaded(tmp_path: Path) -> None:
    arch = ArchInfo("sd1")
    path = tmp_path / "ema.safetensors"
    state = load_state_dict(_export(arch, tmp_path / "plain.safetensors"))
    state["model_ema.diffusion_modelout2bias"] = torch.zeros(4)
    save_file(state, path)
    loaded = load_single_file(path, component_configs=tiny_component_configs(arch))
    assert "model_ema.diffusion_modelout2bias" not in loaded.extras
    assert "model_ema.decay" in loaded.extras


def _export(arch: ArchInfo, path: Path, **kwargs: Any) -> Path:
    export_single_file(build_tiny_components(arch), path, arch=arch, **kwargs)
    return path


def _strip_metadata(path: Path) -> Path:
    bare = path.with_name("bare.safetensors")
    save_file(load_state_dict(path), bare)
    return bare


def test_prediction_type_sources(tmp_path: Path) -> None:
    configs = tiny_component_configs(ArchInfo("sd2", prediction_type="v_prediction"))
    bare = _strip_metadata(
        _export(ArchInfo("sd2", prediction_type="v_prediction"), tmp_path / "v.safetensors")
    )
    shapes, metadata = read_safetensors_shapes(bare), read_safetensors_metadata(bare)
    assert detect_architecture(shapes, metadata).prediction_type is None  # SD 2: unknown
    # No hint at all: the loaded UNet is asked (see test_probe_v_prediction).
    for answer, expected in ((True, "v_prediction"), (False, "epsilon")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(single_file, "probe_v_prediction", lambda unet, a=answer: a)
            sizes_only = {k: v for k, v in configs.items() if k != "scheduler"}
            probed = load_single_file(bare, component_configs=sizes_only)
        assert probed.arch.prediction_type == expected
        assert probed.components["scheduler"].config.prediction_type == expected
    loaded = load_single_file(bare, prediction_type="v", component_configs=configs)
    assert loaded.arch.prediction_type == "v_prediction"
    assert loaded.components["scheduler"].config.prediction_type == "v_prediction"
    bare.with_suffix(".yaml").write_text(
        'model:\n  params:\n    parameterization: "v"\n    linear_start: 0.00085\n'
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_single_file(bare, component_configs=configs).arch.prediction_type == (
            "v_prediction"
        )
    assert detect_architecture(shapes, {"modelspec.predict_key": "v"}).prediction_type == (
        "v_prediction"
    )
    assert (
        detect_architecture(
            shapes, {"modelspec.architecture": "stable-diffusion-v2-768-v"}
        ).prediction_type
        == "v_prediction"
    )
    assert detect_architecture({**shapes, "v_pred": ()}, {}).prediction_type == "v_prediction"
    sd1_shapes = read_safetensors_shapes(_export(ArchInfo("sd1"), tmp_path / "sd1.safetensors"))
    assert detect_architecture(sd1_shapes, {}).prediction_type == "epsilon"
    with pytest.raises(ModelLoadError, match="prediction type"):
        load_single_file(bare, prediction_type="sample", component_configs=configs)


def test_detection_errors() -> None:
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}
    with pytest.raises(ModelLoadError, match="LoRA"):
        detect_architecture(lora, {})
    diffusers_unet = {
        "conv_in.weight": (320, 4, 3, 3),
        "down_blocks.0.resnets.0.conv1.weight": (1,),
    }
    with pytest.raises(ModelLoadError, match="diffusers-format"):
        detect_architecture(diffusers_unet, {})
    unet_in = "model.diffusion_model.input_blocks.0.0.weight"
    with pytest.raises(ModelLoadError, match="InstructPix2Pix"):
        detect_architecture({unet_in: (320, 8, 3, 3)}, {})
    with pytest.raises(ModelLoadError, match="no known text encoder"):
        detect_architecture({unet_in: (320, 4, 3, 3)}, {})
    refiner = {
        unet_in: (384, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "conditioner.embedders.0.model.ln_final.weight": (1280,),
    }
    with pytest.raises(ModelLoadError, match="refiner"):
        detect_architecture(refiner, {})
    mixed = {
        unet_in: (320, 4, 3, 3),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 1024),
    }
    with pytest.raises(ModelLoadError, match="Inconsistent"):
        detect_architecture(mixed, {})


def test_load_refuses_pickles_and_reports_missing_tensors(tmp_path: Path) -> None:
    arch = ArchInfo("sd1")
    path = _export(arch, tmp_path / "full.safetensors")
    pickled = tmp_path / "pickled.safetensors"
    torch.save(load_state_dict(path), pickled)
    with pytest.raises(UnsafeCheckpointError, match="limner convert"):
        load_single_file(pickled)
    state = load_state_dict(path)
    incomplete = {k: v for k, v in state.items() if "final_layer_norm" not in k}
    partial = tmp_path / "partial.safetensors"
    save_file(incomplete, partial)
    with pytest.raises(ModelLoadError, match="lacks"):
        load_single_file(partial, component_configs=tiny_component_configs(arch))


def test_wrong_config_is_a_clear_error(tmp_path: Path) -> None:
    path = _export(ArchInfo("sd1"), tmp_path / "tiny.safetensors")
    configs = tiny_component_configs(ArchInfo("sd1"))
    configs["vae"]["latent_channels"] = 8
    with pytest.raises(ModelLoadError, match="shape"):
        load_single_file(path, component_configs=configs)


def test_export_validates_components(tmp_path: Path) -> None:
    components = build_tiny_components(ArchInfo("sd1"))
    with pytest.raises(InvalidRequestError, match="input channels"):
        export_single_file(
            components, tmp_path / "x.safetensors", arch=ArchInfo("sd1", inpainting=True)
        )
    with pytest.raises(InvalidRequestError, match="text_encoder_2"):
        export_single_file(components, tmp_path / "x.safetensors", arch=ArchInfo("sdxl"))
    with pytest.raises(InvalidRequestError, match="metadata"):
        export_single_file(
            components, tmp_path / "x.safetensors", arch=ArchInfo("sd1"), metadata={"a": 1}
        )


class _FakeUNet(torch.nn.Module):
    """Answers the probe like an epsilon model (returns its input) or a v model (about -x0)."""

    def __init__(self, v_model: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.v_model = v_model
        self.config = SimpleNamespace(in_channels=4, cross_attention_dim=1024)

    def forward(self, x, t, encoder_hidden_states, return_dict=False):
        assert int(t[0]) == 999 and encoder_hidden_states.shape[-1] == 1024
        return ((torch.full_like(x, -2.0) if self.v_model else x.clone()),)


@pytest.mark.parametrize("v_model", [True, False])
def test_probe_v_prediction(v_model: bool) -> None:
    assert single_file.probe_v_prediction(_FakeUNet(v_model)) is v_model
