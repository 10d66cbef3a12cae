"""Input images of queued jobs, kept on disk by content: ``upload:<sha256>`` references.

A job's request is stored before it runs, so its input image and mask must outlive the
HTTP request that brought them. They are written once, named by the SHA-256 of their
bytes (the same upload twice is one file), and the stored request holds
``upload:<sha256>`` instead of a path: requests never name server paths, and a stored
request can be sent back as it is to reuse the same input.

Bytes reach this store only after the server checked them (`limner.server.uploads`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from limner.errors import InvalidRequestError
from limner.requests import GenerationRequest

__all__ = ["UPLOAD_PREFIX", "InputStore", "is_upload_ref"]

UPLOAD_PREFIX = "upload:"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def is_upload_ref(value: str | None) -> bool:
    return bool(value) and value.startswith(UPLOAD_PREFIX)


class InputStore:
    """Content-addressed input images under one folder (``$LIMNER_HOME/uploads``)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        """Keep `data` (already validated image bytes); its ``upload:`` reference."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest
        if not path.exists():
            # Write then rename: a crash never leaves a half-written file under the name.
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        return UPLOAD_PREFIX + digest

    def path_of(self, ref: str) -> Path:
        """The file of an ``upload:`` reference; `InvalidRequestError` if it is unknown."""
        digest = ref.removeprefix(UPLOAD_PREFIX)
        if not ref.startswith(UPLOAD_PREFIX) or not _DIGEST.fullmatch(digest):
            raise InvalidRequestError(
                f"not an upload reference: {ref[:80]!r} (expected upload:<64 hex digits>)"
            )
        path = self.root / digest
        if not path.is_file():
            raise InvalidRequestError(f"no uploaded image {ref[:80]!r} on this server")
        return path

    def read(self, ref: str) -> bytes:
        return self.path_of(ref).read_bytes()

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """The request with its ``upload:`` references replaced by file paths, to run it."""
        update = {
            name: str(self.path_of(value))
            for name in ("init_image", "mask")
            if is_upload_ref(value := getattr(request, name))
        }
        return request.model_copy(update=update) if update else request
