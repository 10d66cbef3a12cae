"""Load checkpoints without running their code.

Only safetensors files are read implicitly. A pickle (``.ckpt``, ``.pt``, ``.bin``) can execute
arbitrary code when unpickled, so it is detected by *content* (never by file extension) and
refused; :func:`convert_pickle_to_safetensors` is the single, explicit place where a pickle is
opened, and it uses PyTorch's restricted ``weights_only`` unpickler.

Format facts used here:

* safetensors: an 8-byte little-endian header length ``N``, then ``N`` bytes of UTF-8 JSON
  (``{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``), then the raw
  tensor bytes; ``data_offsets`` are relative to the end of the header
  (https://github.com/huggingface/safetensors, README "Format").
* ``torch.save`` since PyTorch 1.6 writes a zip archive whose pickle is ``<name>/data.pkl``;
  older ("legacy") files are a bare pickle stream, which starts with the PROTO opcode
  ``0x80`` followed by the protocol number (2 for torch.save).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from limner.errors import InputFileError, UnsafeCheckpointError

Format = Literal["safetensors", "pickle", "unknown"]

# Real headers are a few hundred kB; anything above this is a corrupt length field.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def convert_command(src: str | os.PathLike[str]) -> str:
    """The CLI command we tell users to run for a pickle checkpoint."""
    src_path = Path(src)
    dst = src_path.with_suffix(".safetensors")
    if dst == src_path:  # a pickle that was renamed .safetensors
        dst = src_path.with_name(f"{src_path.stem}-converted.safetensors")
    return f"limner convert {src_path} {dst}"


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"Checkpoint not found: {path}")
    if not path.is_file():
        raise InputFileError(f"Checkpoint path is not a file: {path}")


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def sniff_format(path: str | os.PathLike[str]) -> Format:
    """Tell a safetensors file from a pickle by its first bytes, whatever its extension.

    Returns ``"pickle"`` for a torch zip archive (contains ``data.pkl``) or a raw pickle stream
    (``0x80`` + protocol 2..5), ``"safetensors"`` when the first 8 bytes are a plausible header
    length followed by ``{``, else ``"unknown"``. Raises :class:`InputFileError` if the path
    does not exist.
    """
    file = Path(path)
    _require_file(file)
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(9)
    if head.startswith(_ZIP_MAGIC):
        return "pickle" if _is_torch_zip(file) else "unknown"
    if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= min(size - 8, _MAX_HEADER_BYTES) and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _refuse_pickle(path: Path) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path} is a pickle checkpoint (torch.save/.ckpt format), which can run arbitrary "
        f"code when loaded, so limner does not open it implicitly. Convert it once with "
        f"`{convert_command(path)}` and load the .safetensors file instead."
    )


def _check_format(path: Path) -> None:
    kind = sniff_format(path)
    if kind == "pickle":
        raise _refuse_pickle(path)
    if kind == "unknown":
        raise InputFileError(
            f"{path} is not a safetensors file (no valid header); it may be truncated, "
            f"corrupt, or another format."
        )


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate the JSON header of a safetensors file (no tensor data is read).

    Checks that the header is JSON, that every tensor entry has a known dtype, a shape and
    offsets consistent with its dtype and shape, and that the file holds every byte the
    header promises (a truncated download fails here with a clear message).
    """
    file = Path(path)
    _check_format(file)
    size = file.stat().st_size
    with file.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        raw = handle.read(header_len)
    if len(raw) != header_len:
        raise InputFileError(f"{file} is truncated inside its safetensors header.")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{file} has a corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise InputFileError(f"{file} has a corrupt safetensors header (not a JSON object).")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for dim in shape:
                count *= int(dim)
            expected = count * _SAFETENSORS_DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(f"{file}: malformed header entry for tensor {name!r}.") from exc
        if end - begin != expected or begin < 0:
            raise InputFileError(f"{file}: tensor {name!r} has inconsistent data offsets.")
        data_end = max(data_end, end)
    available = size - 8 - header_len
    if data_end > available:
        raise InputFileError(
            f"{file} is truncated: its header describes {data_end} bytes of tensor data but "
            f"only {available} are present. Download or copy the file again."
        )
    return header


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` string map of a safetensors file ({} when absent)."""
    metadata = read_safetensors_header(path).get("__metadata__") or {}
    return {str(key): str(value) for key, value in metadata.items()}


def read_safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the header only (cheap, for architecture detection)."""
    header = read_safetensors_header(path)
    return {
        name: tuple(int(dim) for dim in entry["shape"])
        for name, entry in header.items()
        if name != "__metadata__"
    }


def load_state_dict(
    path: str | os.PathLike[str], *, include: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """Load the tensors of a safetensors file onto the CPU (only those ``include`` accepts).

    Raises :class:`UnsafeCheckpointError` for a pickle (with the command that converts it) and
    :class:`InputFileError` for a missing, truncated or corrupt file.
    """
    file = Path(path)
    read_safetensors_header(file)
    try:
        if include is None:
            return load_file(file, device="cpu")
        with safe_open(file, framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys() if include(key)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputFileError(f"Could not read safetensors file {file}: {exc}") from exc


def _compact_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detach, move to CPU, make contiguous and give every tensor its own storage.

    safetensors refuses tensors that share memory (tied weights, views into one buffer, as
    torch.save preserves them); cloning those, and any tensor that covers only part of its
    storage, makes each entry self-contained.
    """
    seen: set[int] = set()
    result: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in seen or not whole or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen.add(tensor.untyped_storage().data_ptr())
        result[name] = tensor
    return result


def write_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor],
    dst: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``tensors`` to ``dst`` via a temporary file in the same folder and ``os.replace``.

    A crash or a full disk leaves either the old file or none, never a half-written one.
    """
    target = Path(dst)
    if target.exists() and not overwrite:
        raise InputFileError(f"{target} already exists; pass overwrite=True to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    ready = _compact_tensors(tensors)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(ready, tmp_name, metadata=dict(metadata) if metadata else None)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _unpickle_weights_only(src: Path) -> object:
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch raises UnpicklingError when the pickle references a global outside its
        # allow-list, i.e. the file needs arbitrary code to be reconstructed.
        raise UnsafeCheckpointError(
            f"{src} cannot be converted safely: it contains Python objects that only arbitrary "
            f"code could rebuild (PyTorch's weights-only loader refused it: "
            f"{str(exc).splitlines()[0]}). Get a .safetensors release of this model instead."
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise InputFileError(f"Could not read pickle checkpoint {src}: {exc}") from exc


def convert_pickle_to_safetensors(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, overwrite: bool = False
) -> int:
    """Convert a torch pickle checkpoint to safetensors; return the number of tensors written.

    Uses ``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain
    containers; a file that needs any other class raises :class:`UnsafeCheckpointError`.
    A top-level ``state_dict`` entry (PyTorch Lightning checkpoints) is unwrapped; entries that
    are not tensors (step counters, optimizer state, ...) are dropped.
    """
    src_path, dst_path = Path(src), Path(dst)
    kind = sniff_format(src_path)
    if kind == "safetensors":
        raise InputFileError(f"{src_path} is already a safetensors file; nothing to convert.")
    if kind != "pickle":
        raise InputFileError(f"{src_path} is neither a torch pickle nor a safetensors file.")
    if dst_path.exists() and not overwrite:
        raise InputFileError(f"{dst_path} already exists; pass overwrite=True to replace it.")
    loaded = _unpickle_weights_only(src_path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise InputFileError(f"{src_path} does not contain a state dict (found {type(loaded)}).")
    tensors = {
        key: value
        for key, value in loaded.items()
        if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise InputFileError(f"{src_path} contains no tensors.")
    write_safetensors_atomic(tensors, dst_path, metadata={"format": "pt"}, overwrite=overwrite)
    return len(tensors)
