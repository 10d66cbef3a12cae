"""File and model-folder hashing, with the mtime-keyed cache under LIMNER_HOME."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from limner.checkpoints import hashing
from limner.checkpoints.hashing import a1111_short_hash, file_sha256, folder_sha256
from limner.errors import InputFileError, InvalidRequestError

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LIMNER_HOME", str(home))
    return home


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _cache(home: Path) -> dict:
    return json.loads((home / "cache" / "hashes.json").read_text(encoding="utf-8"))


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(hashing, "_hash_stream", refuse)


def test_known_digest(work: Path) -> None:
    path = work / "abc.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == ABC_SHA256


def test_multi_block_file(work: Path) -> None:
    data = os.urandom(3 * hashing.BLOCK_SIZE + 12345)
    path = work / "big.safetensors"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_empty_file(work: Path) -> None:
    path = work / "empty"
    path.write_bytes(b"")
    assert file_sha256(path) == hashlib.sha256(b"").hexdigest()


def test_cache_entry_keyed_by_path_size_mtime(work: Path, home: Path) -> None:
    path = work / "abc.bin"
    path.write_bytes(b"abc")
    file_sha256(path)
    info = path.stat()
    cache = _cache(home)
    assert cache["version"] == 1
    assert cache["files"][str(path.resolve())] == {
        "size": 3,
        "mtime_ns": info.st_mtime_ns,
        "sha256": ABC_SHA256,
    }
    assert [p.name for p in (home / "cache").iterdir()] == ["hashes.json"]  # no temp left


def test_second_call_is_served_from_cache(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = work / "model.safetensors"
    path.write_bytes(b"weights" * 1000)
    expected = file_sha256(path)
    _no_reading(monkeypatch)
    assert file_sha256(path) == expected
    assert file_sha256(work / "." / "model.safetensors") == expected  # same absolute path


def test_relative_path_uses_absolute_key(
    work: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (work / "abc.bin").write_bytes(b"abc")
    monkeypatch.chdir(work)
    assert file_sha256("abc.bin") == ABC_SHA256
    assert str((work / "abc.bin").resolve()) in _cache(home)["files"]


def test_changed_file_is_rehashed(work: Path) -> None:
    path = work / "model.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == ABC_SHA256
    path.write_bytes(b"abd")
    stamp = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(stamp, stamp))  # coarse file system clocks: force a new mtime
    assert file_sha256(path) == hashlib.sha256(b"abd").hexdigest()


def test_same_size_new_mtime_is_rehashed(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = work / "model.bin"
    path.write_bytes(b"abc")
    file_sha256(path)
    stamp = path.stat().st_mtime_ns + 1
    os.utime(path, ns=(stamp, stamp))
    calls: list[Path] = []
    real = hashing._hash_stream
    monkeypatch.setattr(hashing, "_hash_stream", lambda p: calls.append(p) or real(p))
    assert file_sha256(path) == ABC_SHA256
    assert len(calls) == 1


def test_corrupt_cache_is_ignored_and_rewritten(work: Path, home: Path) -> None:
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "hashes.json").write_text("{ this is not json")
    path = work / "abc.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == ABC_SHA256
    assert _cache(home)["files"][str(path.resolve())]["sha256"] == ABC_SHA256


def test_cache_keeps_other_entries(work: Path, home: Path) -> None:
    for name in ("a.bin", "b.bin"):
        (work / name).write_bytes(name.encode())
        file_sha256(work / name)
    assert len(_cache(home)["files"]) == 2


def test_missing_file(work: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        file_sha256(work / "absent.safetensors")


def test_folder_is_not_a_file(work: Path) -> None:
    with pytest.raises(InputFileError, match="folder_sha256"):
        file_sha256(work)


# --- a1111_short_hash ---------------------------------------------------------------


def test_short_hash_of_sd15() -> None:
    # A1111 lists v1-5-pruned-emaonly.safetensors as "[6ce0161689]" and writes
    # "Model hash: 6ce0161689"; the file's published SHA-256 is this one.
    sha = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
    assert a1111_short_hash(sha) == "6ce0161689"
    assert a1111_short_hash(sha.upper()) == "6ce0161689"


@pytest.mark.parametrize("bad", ["", "6ce0161689", "z" * 64, ABC_SHA256 + "00"])
def test_short_hash_rejects_non_digests(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        a1111_short_hash(bad)


# --- folder_sha256 ------------------------------------------------------------------


def _diffusers_folder(root: Path) -> Path:
    files = {
        "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
        "unet/config.json": b'{"sample_size": 64}',
        "unet/diffusion_pytorch_model.safetensors": b"unet weights",
        "vae/diffusion_pytorch_model.safetensors": b"vae weights",
        "text_encoder/model.safetensors": b"te weights",
        "scheduler/scheduler_config.json": b"{}",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_folder_hash_is_the_documented_manifest(work: Path) -> None:
    root = _diffusers_folder(work / "sd")
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        lines.append(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    expected = hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
    assert folder_sha256(root) == expected


def test_folder_hash_ignores_location_and_hidden_files(work: Path) -> None:
    first = _diffusers_folder(work / "one")
    second = _diffusers_folder(work / "two")
    (second / ".gitattributes").write_text("*.safetensors filter=lfs")
    (second / ".cache" / "huggingface").mkdir(parents=True)
    (second / ".cache" / "huggingface" / "download.lock").write_text("x")
    (second / "unet" / ".DS_Store").write_bytes(b"\0")
    assert folder_sha256(first) == folder_sha256(second)


@pytest.mark.parametrize(
    "change",
    ["content", "rename", "add", "remove"],
)
def test_folder_hash_changes_with_content(work: Path, change: str) -> None:
    root = _diffusers_folder(work / "sd")
    before = folder_sha256(root)
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    if change == "content":
        weights.write_bytes(b"other unet weights")
        stamp = weights.stat().st_mtime_ns + 5_000_000_000
        os.utime(weights, ns=(stamp, stamp))
    elif change == "rename":
        weights.rename(root / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    elif change == "add":
        (root / "tokenizer").mkdir()
        (root / "tokenizer" / "vocab.json").write_text("{}")
    else:
        weights.unlink()
    assert folder_sha256(root) != before


def test_folder_hash_follows_symlinks_like_hf_snapshots(work: Path) -> None:
    plain = _diffusers_folder(work / "plain")
    blobs = work / "blobs"
    blobs.mkdir()
    linked = work / "snapshot"
    for path in sorted(p for p in plain.rglob("*") if p.is_file()):
        relative = path.relative_to(plain)
        blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.write_bytes(path.read_bytes())
        (linked / relative).parent.mkdir(parents=True, exist_ok=True)
        (linked / relative).symlink_to(blob)
    assert folder_sha256(linked) == folder_sha256(plain)


def test_folder_hash_survives_link_cycles(work: Path) -> None:
    root = _diffusers_folder(work / "sd")
    before = folder_sha256(root)
    (root / "unet" / "loop").symlink_to(root, target_is_directory=True)
    assert folder_sha256(root) == before


def test_folder_hash_uses_file_cache(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _diffusers_folder(work / "sd")
    expected = folder_sha256(root)
    _no_reading(monkeypatch)
    assert folder_sha256(root) == expected


def test_folder_errors(work: Path) -> None:
    with pytest.raises(InputFileError, match="no such folder"):
        folder_sha256(work / "absent")
    (work / "file.safetensors").write_bytes(b"x")
    with pytest.raises(InputFileError, match="file_sha256"):
        folder_sha256(work / "file.safetensors")
    (work / "empty" / ".git").mkdir(parents=True)
    with pytest.raises(InputFileError, match="no"):
        folder_sha256(work / "empty")


def test_broken_link_in_folder(work: Path) -> None:
    root = _diffusers_folder(work / "sd")
    (root / "unet" / "dangling.safetensors").symlink_to(work / "gone")
    with pytest.raises(InputFileError, match="broken link"):
        folder_sha256(root)
