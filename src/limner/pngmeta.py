"""PNG files with provenance: A1111's ``parameters`` text plus limner's JSON request.

AUTOMATIC1111 saves the infotext with ``PngInfo.add_text("parameters", text)``
(``modules/images.py``, ``save_image_with_geninfo``). Pillow's ``add_text`` writes a
``tEXt`` chunk when the text is latin-1 encodable and falls back to an uncompressed
``iTXt`` (UTF-8) chunk otherwise; we call the same method, so A1111's PNG Info tab and
other readers see non-ASCII prompts exactly as they see A1111's own files.

The request that produced the image goes into a ``limner`` chunk, always ``iTXt``
(UTF-8) since JSON may hold any character.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from limner.errors import InputFileError, InvalidRequestError

__all__ = ["PARAMETERS_KEY", "REQUEST_KEY", "PngMetadata", "read_png_metadata", "save_png"]

PARAMETERS_KEY = "parameters"  # A1111's key, read by its PNG Info tab
REQUEST_KEY = "limner"


@dataclass(frozen=True)
class PngMetadata:
    """What a PNG says about how it was made; ``None`` where a chunk is absent."""

    parameters: str | None
    request: dict[str, Any] | None


def _png_info(parameters: str, request_json: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    # add_text, as A1111 does: tEXt for latin-1, iTXt for anything else.
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_itxt(REQUEST_KEY, request_json)
    return info


def encode_png(image: Image.Image, *, parameters: str, request_json: str) -> bytes:
    """The PNG bytes `save_png` writes; the same inputs always give the same bytes.

    Only the chunks named here are written (no tIME, nothing copied from
    ``image.info`` but what Pillow needs to keep the pixels: mode, palette,
    transparency, ICC profile).
    """
    try:
        json.loads(request_json)
    except ValueError as exc:
        raise InvalidRequestError(f"request_json is not valid JSON: {exc}") from exc
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_png_info(parameters, request_json))
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either untouched or complete.

    The temporary file lives in the same folder so `os.replace` is a rename on one
    file system (atomic); it is created with mode 0o666 so the umask applies as for
    any other new file (mkstemp would leave 0o600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_png(
    image: Image.Image, path: str | os.PathLike[str], *, parameters: str, request_json: str
) -> None:
    """Save `image` as PNG at `path` with the A1111 ``parameters`` and ``limner`` chunks.

    Atomic (temporary file beside `path`, then ``os.replace``) and deterministic.
    Raises `InvalidRequestError` when `request_json` is not JSON.
    """
    data = encode_png(image, parameters=parameters, request_json=request_json)
    _write_atomically(Path(path), data)


def _open_png(path: Path) -> dict[str, str]:
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, not a PNG image")
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise InputFileError(
                    f"{path}: is a {image.format or 'non-PNG'} image; "
                    "generation metadata is read from PNG files only"
                )
            # .text reads the whole file (chunks after the image data included) and
            # checks every chunk's CRC, so a truncated or damaged file is caught here.
            image.load()
            return {str(key): str(value) for key, value in image.text.items()}
    except UnidentifiedImageError as exc:
        raise InputFileError(f"{path}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"{path}: damaged PNG ({exc})") from exc


def _decode_request(path: Path, raw: str) -> dict[str, Any]:
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise InputFileError(f"{path}: the '{REQUEST_KEY}' chunk is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise InputFileError(f"{path}: the '{REQUEST_KEY}' chunk is not a JSON object")
    return request


def read_png_metadata(path: str | os.PathLike[str]) -> PngMetadata:
    """The ``parameters`` text and the decoded ``limner`` request of a PNG.

    Raises `InputFileError` for a missing file, a non-image or non-PNG file, a damaged
    PNG, or a ``limner`` chunk that is not a JSON object.
    """
    path = Path(path)
    texts = _open_png(path)
    raw_request = texts.get(REQUEST_KEY)
    request = None if raw_request is None else _decode_request(path, raw_request)
    return PngMetadata(parameters=texts.get(PARAMETERS_KEY), request=request)
