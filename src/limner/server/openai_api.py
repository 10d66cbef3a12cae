"""OpenAI's image API, ``/v1/images/``: generations, edits (with a mask), variations.

Request and response shapes follow OpenAI's API reference (``images.generate``,
``images.edit``, ``images.create_variation``): JSON for generations, multipart forms for
the other two, answers ``{"created", "data": [{"b64_json"} | {"url"}]}``. An edit's mask
is OpenAI's: a PNG whose fully transparent pixels mark what to repaint; without a mask,
the image's own transparent pixels are the mask, and an opaque image is changed as a
whole (img2img). ``model`` is a registered limner model; OpenAI's own model names mean
the server's current model.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Literal

from fastapi import APIRouter, Request
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from limner.jobs import Job, JobStatus
from limner.requests import MAX_PROMPT_CHARS, Mode
from limner.server.errors import ApiError, status_for
from limner.server.services import Services
from limner.server.uploads import CheckedImage, check_image_bytes, encode_png, open_checked

__all__ = ["router"]

router = APIRouter(prefix="/v1/images", tags=["openai"])

OPENAI_MODELS = re.compile(r"(dall-e-[23]|gpt-image-.*)")
MAX_N = 10  # as OpenAI
VARIATION_STRENGTH = 0.6  # enough change to be a variation, little enough to stay one
EDIT_STRENGTH = 1.0  # the masked area is drawn anew, as OpenAI's edits do
WHOLE_IMAGE_EDIT_STRENGTH = 0.75
_SIZE = re.compile(r"(\d{2,5})x(\d{2,5})")


def services(request: Request) -> Services:
    return request.app.state.services


class GenerationsBody(BaseModel):
    """OpenAI's ``images.generate`` body; fields that do not change a local image
    (``user``, ``moderation``, ``quality``, ``style``) are accepted and unused."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    n: int | None = Field(1, ge=1, le=MAX_N)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    stream: bool | None = None


def _model(svc: Services, name: str | None) -> str:
    if not name or OPENAI_MODELS.fullmatch(name):
        return svc.current_model()
    return svc.check_model(name)


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None
    match = _SIZE.fullmatch(size.strip())
    if not match:
        raise ApiError(
            422, f"size: expected WIDTHxHEIGHT (e.g. 512x512) or auto, got {size[:40]!r}"
        )
    return int(match.group(1)), int(match.group(2))


def _check_output_options(background: str | None, output_format: str | None, stream) -> None:
    if background == "transparent":
        raise ApiError(422, "background: transparent images are not generated here")
    if output_format not in (None, "png"):
        raise ApiError(422, "output_format: only png is written here")
    if stream:
        raise ApiError(422, "stream: streamed partial images are not supported")


async def _run(request: Request, fields: dict, response_format: str | None) -> dict:
    svc = services(request)

    def submit() -> Job:
        return svc.submit(svc.build_request(fields), source="openai")

    job = await asyncio.to_thread(submit)
    job = await svc.wait_for_final(job.id)
    if job.status is JobStatus.CANCELLED:
        raise ApiError(409, "the generation was cancelled")
    if job.status is not JobStatus.COMPLETED:
        raise ApiError(status_for(job.error_kind), job.error or "the generation failed")
    fmt = response_format or "url"
    base = str(request.base_url).rstrip("/")

    def items() -> list[dict]:
        if fmt == "url":
            return [{"url": f"{base}/api/v1/images/{i}/file"} for i in job.image_ids]
        records = [svc.store.get_image(i) for i in job.image_ids]
        return [
            {"b64_json": base64.b64encode(svc.image_path(r).read_bytes()).decode("ascii")}
            for r in records
        ]

    return {"created": int(job.finished_at or time.time()), "data": await asyncio.to_thread(items)}


@router.post("/generations")
async def generations(body: GenerationsBody, request: Request) -> dict:
    svc = services(request)
    _check_output_options(body.background, body.output_format, body.stream)
    width, height = _size(body.size)
    fields = {
        "mode": Mode.TXT2IMG,
        "prompt": body.prompt,
        "model": _model(svc, body.model),
        "width": width,
        "height": height,
        "batch_count": body.n or 1,
        "steps": svc.settings.default_steps,
    }
    return await _run(request, fields, body.response_format)


# -- multipart routes ------------------------------------------------------------------


async def _form(request: Request) -> dict:
    limits = services(request).limits
    try:
        form = await request.form(max_files=8, max_fields=64, max_part_size=1024 * 1024)
    except ApiError:
        raise
    except Exception as err:  # malformed multipart: the parser's own message
        raise ApiError(400, f"the body is not a valid multipart form ({err})"[:300]) from None
    values: dict = {}
    for key, value in form.multi_items():
        name = key.removesuffix("[]")
        if isinstance(value, UploadFile):
            data = await value.read(limits.max_body_bytes + 1)
            values.setdefault(name, []).append(data)
        else:
            values.setdefault(name, []).append(value)
    return values


def _one(values: dict, name: str, *, required: bool = False):
    items = values.get(name) or []
    if not items:
        if required:
            raise ApiError(422, f"{name}: required")
        return None
    if len(items) > 1:
        raise ApiError(422, f"{name}: give one, not {len(items)}")
    return items[0]


def _text(values: dict, name: str) -> str | None:
    value = _one(values, name)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{name}: expected a form field, not a file")
    return value


def _file(values: dict, name: str, *, required: bool = False) -> bytes | None:
    value = _one(values, name, required=required)
    if value is not None and not isinstance(value, bytes):
        raise ApiError(422, f"{name}: expected a file upload")
    return value


def _n(values: dict) -> int:
    text = _text(values, "n")
    if text is None:
        return 1
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_N:
        raise ApiError(422, f"n: an integer from 1 to {MAX_N}")
    return int(text)


def _response_format(values: dict) -> str | None:
    fmt = _text(values, "response_format")
    if fmt not in (None, "url", "b64_json"):
        raise ApiError(422, "response_format: url or b64_json")
    return fmt


def _transparent_mask(image: Image.Image) -> Image.Image | None:
    """White where `image` is transparent (OpenAI: transparent = repaint); None if it has
    no alpha channel."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA"):
        return None
    alpha = image.getchannel("A")
    return alpha.point(lambda a: 255 if a < 128 else 0, mode="L")


@router.post("/edits")
async def edits(request: Request) -> dict:
    svc = services(request)
    values = await _form(request)
    prompt = _text(values, "prompt")
    if prompt is None:
        raise ApiError(422, "prompt: required")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(422, f"prompt: at most {MAX_PROMPT_CHARS} characters")
    _check_output_options(_text(values, "background"), _text(values, "output_format"), None)
    image_bytes = _file(values, "image", required=True)
    mask_bytes = _file(values, "mask")
    width, height = _size(_text(values, "size"))
    n, fmt, model = _n(values), _response_format(values), _model(svc, _text(values, "model"))

    def prepare() -> dict:
        limits = svc.limits
        image = check_image_bytes(image_bytes, what="image", limits=limits)
        fields = {
            "prompt": prompt,
            "model": model,
            "width": width,
            "height": height,
            "batch_count": n,
            "init_image": _b64(image),
            "steps": svc.settings.default_steps,
        }
        mask = _edit_mask(image, mask_bytes, svc)
        if mask is None:
            return {**fields, "mode": Mode.IMG2IMG, "strength": WHOLE_IMAGE_EDIT_STRENGTH}
        return {**fields, "mode": Mode.INPAINT, "mask": mask, "strength": EDIT_STRENGTH}

    return await _run(request, await asyncio.to_thread(prepare), fmt)


def _edit_mask(image: CheckedImage, mask_bytes: bytes | None, svc: Services) -> str | None:
    if mask_bytes is not None:
        checked = check_image_bytes(mask_bytes, what="mask", limits=svc.limits)
        if (checked.width, checked.height) != (image.width, image.height):
            raise ApiError(
                422,
                f"mask: {checked.width}x{checked.height}, but the image is "
                f"{image.width}x{image.height}; they must be the same size",
            )
        mask = _transparent_mask(open_checked(checked))
        if mask is None:
            raise ApiError(
                422, "mask: it needs an alpha channel (fully transparent pixels = repaint)"
            )
    else:
        mask = _transparent_mask(open_checked(image))
        if mask is None or mask.getextrema()[1] == 0:
            return None  # an opaque image: changed as a whole
    if mask.getextrema()[1] == 0:
        raise ApiError(422, "mask: no transparent pixels, so nothing would be repainted")
    return base64.b64encode(encode_png(mask)).decode("ascii")


def _b64(image: CheckedImage) -> str:
    return base64.b64encode(image.data).decode("ascii")


@router.post("/variations")
async def variations(request: Request) -> dict:
    svc = services(request)
    values = await _form(request)
    image_bytes = _file(values, "image", required=True)
    width, height = _size(_text(values, "size"))
    n, fmt, model = _n(values), _response_format(values), _model(svc, _text(values, "model"))

    def prepare() -> dict:
        image = check_image_bytes(image_bytes, what="image", limits=svc.limits)
        return {
            "mode": Mode.IMG2IMG,
            "prompt": "",
            "model": model,
            "width": width,
            "height": height,
            "batch_count": n,
            "init_image": _b64(image),
            "strength": VARIATION_STRENGTH,
            "steps": svc.settings.default_steps,
        }

    return await _run(request, await asyncio.to_thread(prepare), fmt)
