"""Content hashes of model files and folders, cached so large checkpoints hash once.

``file_sha256`` streams the file in 1 MiB blocks, as A1111's ``calculate_sha256``
(``modules/hashes.py``) does, and remembers the digest in
``<limner home>/cache/hashes.json`` under the file's absolute path, size and mtime_ns:
while those three are unchanged the cached digest is returned without reading the
file. A1111's "Model hash" in infotexts is ``a1111_short_hash`` of that digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from limner.errors import InputFileError, InvalidRequestError
from limner.home import cache_dir

__all__ = ["a1111_short_hash", "file_sha256", "folder_sha256"]

BLOCK_SIZE = 1024 * 1024
CACHE_NAME = "hashes.json"
CACHE_VERSION = 1
SHORT_HASH_LENGTH = 10


def _cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def _load_cache() -> dict[str, Any]:
    """The cached entries; an unreadable or foreign cache counts as empty.

    The cache only saves time, so a damaged one is rebuilt rather than reported.
    """
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _store_cache(files: dict[str, Any]) -> None:
    """Write the cache atomically: a crash leaves the old file or the new one, never half."""
    path = _cache_path()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    payload = json.dumps({"version": CACHE_VERSION, "files": files}, indent=1, sort_keys=True)
    try:
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        # Failing to remember a hash must not fail the caller; next time it is rehashed.
        tmp.unlink(missing_ok=True)


def _stat_file(path: Path) -> os.stat_result:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise InputFileError(f"{path}: no such file") from exc
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(f"{path}: is a folder; use folder_sha256 for model folders")
    return info


def _hash_stream(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(BLOCK_SIZE):
                digest.update(block)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return digest.hexdigest()


def _fingerprint(info: os.stat_result) -> tuple[int, int, int]:
    # Not the whole stat_result: reading the file may move st_atime.
    return info.st_ino, info.st_size, info.st_mtime_ns


def _cache_entry(info: os.stat_result, sha256: str) -> dict[str, Any]:
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha256}


def _cached(entry: object, info: os.stat_result) -> str | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("size") != info.st_size or entry.get("mtime_ns") != info.st_mtime_ns:
        return None
    sha256 = entry.get("sha256")
    return sha256 if isinstance(sha256, str) else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The lowercase hex SHA-256 of a file's content, from the cache when still valid.

    Raises `InputFileError` for a missing or unreadable file or a folder.
    """
    path = Path(path).resolve()
    key = str(path)
    info = _stat_file(path)
    hit = _cached(_load_cache().get(key), info)
    if hit is not None:
        return hit
    sha256 = _hash_stream(path)
    # A file written to while we read it gives a digest of no version of it; keep that
    # out of the cache (the caller still gets it, as any streaming hasher would give).
    if _fingerprint(_stat_file(path)) == _fingerprint(info):
        files = _load_cache()  # re-read: another process may have added entries meanwhile
        files[key] = _cache_entry(info, sha256)
        _store_cache(files)
    return sha256


def a1111_short_hash(sha256: str) -> str:
    """A1111's "Model hash": the first 10 hex digits of the file's SHA-256.

    ``CheckpointInfo.shorthash = sha256[0:10]`` in A1111's ``modules/sd_models.py``
    (the 8-digit hashes of old infotexts are A1111's legacy partial-file hash).
    """
    digest = sha256.strip().lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise InvalidRequestError(f"not a SHA-256 hex digest: {sha256!r}")
    return digest[:SHORT_HASH_LENGTH]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _walk(
    folder: Path, root: Path, ancestors: frozenset[tuple[int, int]]
) -> list[tuple[str, Path]]:
    identity = _identity(folder)
    if identity in ancestors:
        return []  # a link back up the tree: walking it again would never end
    ancestors = ancestors | {identity}
    found: list[tuple[str, Path]] = []
    for entry in folder.iterdir():
        if _is_hidden(entry.name):
            continue
        if entry.is_dir():
            found.extend(_walk(entry, root, ancestors))
        elif entry.is_file():
            found.append((entry.relative_to(root).as_posix(), entry))
        else:
            raise InputFileError(f"{entry}: broken link or not a regular file")
    return found


def _walk_files(root: Path) -> list[tuple[str, Path]]:
    """Every non-hidden file under `root` as (relative POSIX path, path), sorted by path.

    Symlinks are followed (Hugging Face cache snapshots are links to blobs); a link to
    one of its own parent folders is skipped, so link cycles end.
    """
    return sorted(_walk(root, root, frozenset()))


def folder_sha256(folder: str | os.PathLike[str]) -> str:
    """A stable hash of a diffusers-format model folder.

    SHA-256 over one line per file, ``<relative/posix/path>\\0<file sha256>\\n``, in
    sorted path order; hidden files and folders (``.git``, ``.cache``, ...) are left
    out. Renaming, adding, removing or changing any file changes the hash; where the
    folder sits and file timestamps do not. File digests come from `file_sha256`'s
    cache.
    """
    root = Path(folder).resolve()
    if not root.exists():
        raise InputFileError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputFileError(f"{root}: is a file; use file_sha256 for single-file checkpoints")
    files = _walk_files(root)
    if not files:
        raise InputFileError(f"{root}: holds no (non-hidden) files")
    manifest = hashlib.sha256()
    for relative, path in files:
        manifest.update(f"{relative}\0{file_sha256(path)}\n".encode())
    return manifest.hexdigest()
