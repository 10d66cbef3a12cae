"""Loading for the fast path: single-file checkpoints are read tensor by tensor from the
memory-mapped file, straight into the runtime's dtype, with the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from limner.checkpoints import single_file
from limner.checkpoints.arch import ArchInfo
from limner.checkpoints.single_file import _LazyTensors, export_single_file, load_single_file
from limner.checkpoints.tiny import build_tiny_components, tiny_component_configs


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_single_file_loads_straight_into_bf16(tmp_path: Path, family: str) -> None:
    arch = ArchInfo(family, prediction_type="epsilon")
    components = build_tiny_components(arch, seed=2)
    path = tmp_path / "model.safetensors"
    export_single_file(components, path, arch=arch)
    loaded = load_single_file(
        path, component_configs=tiny_component_configs(arch), torch_dtype=torch.bfloat16
    )
    for name in ("unet", "vae", "text_encoder"):
        expected = components[name].state_dict()
        for key, value in loaded.components[name].state_dict().items():
            if value.is_floating_point():
                assert value.dtype == torch.bfloat16, (name, key)
                assert torch.equal(value, expected[key].to(torch.bfloat16)), (name, key)
    # tensors no component owns keep their stored dtype (they are written back as read)
    assert all(t.dtype != torch.bfloat16 for t in loaded.extras.values())


def test_tensors_are_read_one_at_a_time_on_access(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"w": torch.ones(4, 4), "b": torch.arange(3), "other": torch.zeros(2)}, path)
    reads: list[str] = []
    with safe_open(path, framework="pt", device="cpu") as handle:

        class Counting:
            def get_tensor(self, name):
                reads.append(name)
                return handle.get_tensor(name)

        lazy = _LazyTensors(Counting(), {"w": "w", "b": "b", "x": "other"}, {"w"}, torch.bfloat16)
        assert reads == [] and len(lazy) == 3 and set(lazy) == {"w", "b", "x"}
        w = lazy["w"]
        assert reads == ["w"] and w.dtype == torch.bfloat16 and w._base is None
        assert lazy["b"].dtype == torch.int64  # not a weight: as stored
        assert lazy["x"].dtype == torch.float32
    assert reads == ["w", "b", "other"]


def test_whole_file_is_never_read_at_once(tmp_path: Path, monkeypatch) -> None:
    arch = ArchInfo("sd1")
    path = tmp_path / "model.safetensors"
    export_single_file(build_tiny_components(arch, seed=3), path, arch=arch)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole state dict was read")

    monkeypatch.setattr("safetensors.torch.load_file", refuse)
    monkeypatch.setattr("limner.checkpoints.safe_load.load_state_dict", refuse)
    monkeypatch.setattr(single_file, "load_state_dict", refuse, raising=False)
    loaded = load_single_file(path, component_configs=tiny_component_configs(arch))
    assert not any(p.is_meta for p in loaded.components["unet"].parameters())
