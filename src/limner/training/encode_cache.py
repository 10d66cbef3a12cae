"""Disk caches of what the frozen encoders make of each training scene.

The UNet trainer runs two frozen networks on every batch before the UNet sees it: MiniLM
on the captions and the VAE's encoder on the rendered images. Both give the same answer
each time a scene is drawn again, and a stage draws most single-emoji scenes more than
once, so their outputs are kept on disk per scene (kohya's sd-scripts offers the same as
cached latents and cached text-encoder outputs). Unlike those, nothing is computed ahead:
a row is filled the first time its scene is drawn and read from then on, so a cache
costs no separate pass and pays back as a run goes on.

What is stored is exactly what the trainer would compute: MiniLM's fp32 hidden states, and
the VAE's posterior parameters (mean and log-variance) in the dtype the encoder made them
in, from which each step still draws its own latent sample. The files are sparse (sized
for every scene, taking disk space as rows are written), read and written a row at a time
with plain file I/O: a memory map of such a file costs a page fault per page touched,
measured here at 450 ms against 4 ms for writing a batch of 32 rows. Each file is tied by
a manifest to the data, the encoder weights and the precision it was made with: a cache
made for anything else is refused, never read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from limner.errors import InvalidRequestError

_STORAGE = np.float32  # what the rows are stored as; bf16 values are exact in it


def module_sha256(module: torch.nn.Module) -> str:
    """A digest of a module's weights (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class RowCache:
    """`rows` rows of shape `row_shape` in `folder/NAME.f32`, with a mask of those filled.

    `fingerprint` says what the rows were computed from; a cache whose manifest says
    anything else is refused. The mask reaches the disk only in `save()`, after the rows
    it marks have been flushed, so a run killed between saves loses only rows it has not
    marked (and that are computed again), never marks a row it has not written.
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        rows: int,
        row_shape: tuple[int, ...],
        fingerprint: dict,
    ) -> None:
        if folder.exists() and not folder.is_dir():
            raise InvalidRequestError(f"--cache {folder}: not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.row_shape = tuple(row_shape)
        manifest = {"rows": rows, "row_shape": list(row_shape), "storage": "float32"}
        manifest.update(fingerprint)
        self._manifest_path = folder / f"{name}.json"
        self._data_path = folder / f"{name}.f32"
        self._filled_path = folder / f"{name}.filled.npy"
        self._row_bytes = int(np.prod(row_shape)) * np.dtype(_STORAGE).itemsize
        expected_bytes = rows * self._row_bytes
        if self._manifest_path.exists():
            have = json.loads(self._manifest_path.read_text())
            differs = sorted(k for k in set(have) | set(manifest) if have.get(k) != manifest.get(k))
            if differs:
                raise InvalidRequestError(
                    f"{folder}: its {name} cache was made for another {', '.join(differs)}; "
                    f"remove {name}.* there or give another --cache folder"
                )
            if not self._data_path.exists() or self._data_path.stat().st_size != expected_bytes:
                raise InvalidRequestError(
                    f"{self._data_path}: missing or not {expected_bytes} bytes; "
                    f"remove {name}.* in {folder} to start that cache again"
                )
            self._file = open(self._data_path, "r+b", buffering=0)  # noqa: SIM115
        else:
            for stale in (self._data_path, self._filled_path):
                stale.unlink(missing_ok=True)
            self._file = open(self._data_path, "w+b", buffering=0)  # noqa: SIM115
            self._file.truncate(expected_bytes)  # sparse: no blocks until rows are written
            _write_atomically(self._manifest_path, json.dumps(manifest, indent=1).encode())
        weakref.finalize(self, self._file.close)
        self.filled = np.zeros(rows, dtype=bool)
        if self._filled_path.exists():
            filled = np.load(self._filled_path, allow_pickle=False)
            if filled.shape != (rows,) or filled.dtype != bool:
                raise InvalidRequestError(
                    f"{self._filled_path}: not a mask of {rows} rows; remove {name}.* in {folder}"
                )
            self.filled = filled
        self._dirty = False

    def __len__(self) -> int:
        return len(self.filled)

    def get(self, indices, compute: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        """The rows at `indices` (repeats allowed), as a float32 tensor. Those not filled
        yet are made by `compute(missing)` (each missing index once, in increasing order),
        stored, and then read back like the others."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.name} cache: index out of range 0..{len(self) - 1}")
        missing = np.unique(indices[~self.filled[indices]])
        if len(missing):
            made = compute(missing)
            if tuple(made.shape) != (len(missing), *self.row_shape):
                raise ValueError(
                    f"{self.name} cache: computed {tuple(made.shape)}, expected "
                    f"{(len(missing), *self.row_shape)}"
                )
            values = made.detach().float().cpu().numpy()
            for row, value in zip(missing, values, strict=True):
                self._file.seek(int(row) * self._row_bytes)
                self._file.write(np.ascontiguousarray(value, dtype=_STORAGE).tobytes())
            self.filled[missing] = True
            self._dirty = True
        out = np.empty((len(indices), *self.row_shape), dtype=_STORAGE)
        for k, row in enumerate(indices):
            self._file.seek(int(row) * self._row_bytes)
            data = self._file.read(self._row_bytes)
            if len(data) != self._row_bytes:
                raise InvalidRequestError(f"{self._data_path}: row {row} is cut short")
            out[k] = np.frombuffer(data, dtype=_STORAGE).reshape(self.row_shape)
        return torch.from_numpy(out)

    def save(self) -> None:
        """Flush the rows, then record which are filled."""
        if not self._dirty:
            return
        os.fsync(self._file.fileno())
        _write_atomically(self._filled_path, _npy_bytes(self.filled))
        self._dirty = False


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
