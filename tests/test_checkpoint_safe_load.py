"""Pickle detection, refusal and explicit conversion (limner.checkpoints.safe_load)."""

from __future__ import annotations

import collections
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from limner.checkpoints.safe_load import (
    convert_pickle_to_safetensors,
    load_state_dict,
    read_safetensors_metadata,
    read_safetensors_shapes,
    sniff_format,
)
from limner.errors import InputFileError, UnsafeCheckpointError


class Payload:
    """A custom class: unpickling it needs arbitrary code (an import of this module)."""

    def __init__(self) -> None:
        self.value = 3


def _weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3, generator=generator),
        "model.diffusion_model.out.2.bias": torch.randn(4, generator=generator),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
    }


@pytest.fixture
def safetensors_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(_weights(), path, metadata={"modelspec.title": "tiny"})
    return path


def test_sniff_safetensors(safetensors_file: Path) -> None:
    assert sniff_format(safetensors_file) == "safetensors"
    renamed = safetensors_file.rename(safetensors_file.with_suffix(".ckpt"))
    assert sniff_format(renamed) == "safetensors"  # content decides, not the extension
    assert load_state_dict(renamed).keys() == _weights().keys()


def test_renamed_torch_zip_is_sniffed_and_refused(tmp_path: Path) -> None:
    disguised = tmp_path / "model.safetensors"  # a real torch.save file with the wrong suffix
    torch.save({"state_dict": _weights()}, disguised)
    assert sniff_format(disguised) == "pickle"
    with pytest.raises(UnsafeCheckpointError, match="limner convert") as info:
        load_state_dict(disguised)
    assert str(disguised) in str(info.value)
    with pytest.raises(UnsafeCheckpointError):
        read_safetensors_metadata(disguised)


def test_legacy_raw_pickle_is_sniffed(tmp_path: Path) -> None:
    legacy = tmp_path / "old.ckpt"
    torch.save(_weights(), legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:2] == b"\x80\x02"
    assert sniff_format(legacy) == "pickle"
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict(legacy)


def test_unknown_format(tmp_path: Path) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a model")
    assert sniff_format(text) == "unknown"
    with pytest.raises(InputFileError, match="not a safetensors file"):
        load_state_dict(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        sniff_format(tmp_path / "absent.safetensors")
    with pytest.raises(InputFileError, match="not found"):
        load_state_dict(tmp_path / "absent.safetensors")


def test_truncated_safetensors(safetensors_file: Path) -> None:
    data = safetensors_file.read_bytes()
    safetensors_file.write_bytes(data[:-100])
    with pytest.raises(InputFileError, match="truncated"):
        load_state_dict(safetensors_file)


def test_corrupt_header(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # no closing brace
    broken.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(InputFileError, match="corrupt"):
        load_state_dict(broken)
    inconsistent = tmp_path / "offsets.safetensors"
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    inconsistent.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(InputFileError, match="inconsistent"):
        load_state_dict(inconsistent)


def test_load_and_metadata(safetensors_file: Path) -> None:
    loaded = load_state_dict(safetensors_file)
    for key, value in _weights().items():
        assert torch.equal(loaded[key], value)
    assert read_safetensors_metadata(safetensors_file) == {"modelspec.title": "tiny"}
    assert read_safetensors_shapes(safetensors_file)["model.diffusion_model.out.2.bias"] == (4,)
    only_bias = load_state_dict(safetensors_file, include=lambda key: key.endswith("bias"))
    assert list(only_bias) == ["model.diffusion_model.out.2.bias"]


def test_convert_round_trip(tmp_path: Path) -> None:
    weights = _weights()
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": weights, "global_step": 470000, "epoch": 3, "note": "lightning"}, src)
    dst = tmp_path / "model.safetensors"
    assert convert_pickle_to_safetensors(src, dst) == len(weights)
    assert sniff_format(dst) == "safetensors"
    converted = load_state_dict(dst)
    assert converted.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(converted[key], value)
        assert converted[key].dtype == value.dtype
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_convert_plain_state_dict_with_shared_storage(tmp_path: Path) -> None:
    base = torch.randn(6, 4)
    shared = collections.OrderedDict(
        tied_a=base, tied_b=base, view=base[2:4], transposed=base.t(), counter=7
    )
    src = tmp_path / "shared.pt"
    torch.save(shared, src)
    dst = tmp_path / "shared.safetensors"
    assert convert_pickle_to_safetensors(src, dst) == 4  # the int entry is dropped
    converted = load_state_dict(dst)
    assert torch.equal(converted["tied_a"], base) and torch.equal(converted["tied_b"], base)
    assert torch.equal(converted["view"], base[2:4])
    assert torch.equal(converted["transposed"], base.t())


def test_convert_refuses_to_overwrite(tmp_path: Path, safetensors_file: Path) -> None:
    src = tmp_path / "model.ckpt"
    torch.save(_weights(), src)
    with pytest.raises(InputFileError, match="already exists"):
        convert_pickle_to_safetensors(src, safetensors_file)
    before = safetensors_file.read_bytes()
    assert convert_pickle_to_safetensors(src, safetensors_file, overwrite=True) == 3
    assert safetensors_file.read_bytes() != before


def test_convert_refuses_arbitrary_code(tmp_path: Path) -> None:
    src = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _weights(), "payload": Payload()}, src)
    dst = tmp_path / "evil.safetensors"
    with pytest.raises(UnsafeCheckpointError, match="arbitrary"):
        convert_pickle_to_safetensors(src, dst)
    assert not dst.exists()


def test_convert_rejects_non_pickles(tmp_path: Path, safetensors_file: Path) -> None:
    with pytest.raises(InputFileError, match="already a safetensors"):
        convert_pickle_to_safetensors(safetensors_file, tmp_path / "out.safetensors")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputFileError):
        convert_pickle_to_safetensors(junk, tmp_path / "out.safetensors")
