"""Images that arrive over HTTP: base64 text, data: URLs, multipart files, gallery ids.

Every image is checked before it is kept: the base64 must decode, the bytes must be a
PNG, JPEG or WebP, and the size read from the header must be within the limits before
any pixel is decoded (a 50k x 50k PNG is a few hundred bytes of header and 10 GB of
pixels). Then the whole image is decoded once, so a truncated file fails here, with a
4xx, and not in the worker.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from limner.errors import InvalidRequestError
from limner.jobs import JobNotFoundError
from limner.jobs.inputs import UPLOAD_PREFIX
from limner.server.errors import ApiError
from limner.server.services import Services
from limner.server.settings import Limits

__all__ = ["IMAGE_PREFIX", "CheckedImage", "check_image_bytes", "decode_base64", "store_image_ref"]

IMAGE_PREFIX = "image:"
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
_DATA_URL = re.compile(r"data:([\w/+.-]*)(;[\w=.+-]+)*;base64,", re.ASCII)
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    width: int
    height: int
    mode: str


def decode_base64(text: str, *, what: str, limits: Limits) -> bytes:
    """Bytes of base64 text or a ``data:...;base64,`` URL; 422 if it is neither."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(422, f"{what}: expected a base64-encoded image, got an empty value")
    text = text.strip()
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    elif text.startswith("data:"):
        raise ApiError(422, f"{what}: a data: URL must be base64 (data:image/png;base64,...)")
    # 4 characters of base64 per 3 bytes: refuse before decoding what cannot fit.
    if len(text) * 3 // 4 > limits.max_body_bytes:
        raise ApiError(413, f"{what}: the image is larger than {limits.max_body_bytes} bytes")
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{what}: not valid base64 (or a data: URL)") from None


def check_image_bytes(data: bytes, *, what: str, limits: Limits) -> CheckedImage:
    """Open and fully decode `data` within the limits, or refuse it with a 4xx."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in ACCEPTED_FORMATS:
                    raise ApiError(415, f"{what}: a {img.format} image; send PNG, JPEG or WebP")
                width, height = img.size
                if (
                    max(width, height) > limits.max_image_side
                    or width * height > limits.max_image_pixels
                ):
                    raise ApiError(
                        413,
                        f"{what}: the image is {width}x{height}; at most "
                        f"{limits.max_image_side} pixels a side and {limits.max_image_pixels} "
                        "pixels in all are accepted",
                    )
                img.load()
                return CheckedImage(data, width, height, img.mode)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        size = _png_header_size(data)
        claimed = f" (its header claims {size[0]}x{size[1]} pixels)" if size else ""
        raise ApiError(413, f"{what}: the image is too large to decode safely{claimed}") from None
    except UnidentifiedImageError:
        raise ApiError(
            400,
            f"{what}: not a readable PNG, JPEG or WebP image (images are sent as base64 data or "
            "references, never as paths)",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ApiError(
            400, f"{what}: not a readable PNG, JPEG or WebP image ({err})"[:300]
        ) from None


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (bytes 16..24), for the error message."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def open_checked(checked: CheckedImage) -> Image.Image:
    with Image.open(io.BytesIO(checked.data)) as img:
        img.load()
        return img.copy()


def store_image_ref(value: str, *, what: str, services: Services) -> tuple[str, CheckedImage]:
    """An ``upload:`` reference for an image given as base64, data: URL, ``image:<id>``
    (a gallery image) or ``upload:<sha256>`` (an earlier upload); and the checked image."""
    limits, inputs = services.settings.limits, services.inputs
    if isinstance(value, str) and value.startswith(UPLOAD_PREFIX):
        try:
            data = inputs.read(value)
        except InvalidRequestError as err:
            raise ApiError(422, f"{what}: {err}") from None
        return value, check_image_bytes(data, what=what, limits=limits)
    if isinstance(value, str) and value.startswith(IMAGE_PREFIX):
        data = gallery_image_bytes(value.removeprefix(IMAGE_PREFIX), what=what, services=services)
    else:
        data = decode_base64(value, what=what, limits=limits)
    checked = check_image_bytes(data, what=what, limits=limits)
    return inputs.put(checked.data), checked


def gallery_image_bytes(image_id: str, *, what: str, services: Services) -> bytes:
    if not _ID.fullmatch(image_id):
        raise ApiError(422, f"{what}: {image_id[:40]!r} is not an image id")
    try:
        record = services.store.get_image(image_id)
    except JobNotFoundError:
        raise ApiError(422, f"{what}: no gallery image with id {image_id}") from None
    path = services.image_path(record)
    if not path.is_file():
        raise ApiError(422, f"{what}: the file of gallery image {image_id} is gone")
    return path.read_bytes()
