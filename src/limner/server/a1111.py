"""AUTOMATIC1111's API, ``/sdapi/v1/``: what chat front ends, painting plugins and the
`webuiapi` package call.

Field names and defaults follow A1111's ``StableDiffusionProcessingTxt2Img`` /
``Img2Img`` API models (``modules/api/models.py``) and its responses
(``TextToImageResponse``: ``images``, ``parameters``, ``info`` as a JSON string).
Fields that would change the image and that limner cannot honour (face restoration,
tiling, hires fix, scripts, styles, variation seeds, "only masked" inpainting, ...) are
refused with a 422 that names them, never ignored. Fields that do not change the
image (saving options, ``image_cfg_scale`` for non-pix2pix models, ...) are accepted.
A generation is a job in the queue like any other; the request waits for it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from limner import __version__, api
from limner.errors import InvalidRequestError
from limner.infotext import parse_infotext
from limner.jobs import Job, JobStatus
from limner.pngmeta import REQUEST_KEY
from limner.requests import Mode
from limner.server.errors import ApiError, status_for
from limner.server.services import BUILTIN, Services
from limner.server.uploads import check_image_bytes, decode_base64, encode_png, open_checked

__all__ = ["router"]

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"])

CLIP_SKIP_KEY = "CLIP_stop_at_last_layers"

# A1111 scheduler names (lower case, as `webuiapi` sends them) -> limner schedule types.
_SCHEDULERS = {"automatic": None, "karras": "Karras", "exponential": "Exponential"}


def services(request: Request) -> Services:
    return request.app.state.services


class _Processing(BaseModel):
    """The fields txt2img and img2img share. Unknown fields are ignored, as A1111 does."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict | None = None
    script_name: str | None = None
    script_args: list = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict = Field(default_factory=dict)
    infotext: str | None = None


class Txt2ImgRequest(_Processing):
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(_Processing):
    init_images: list[str] = Field(default_factory=list)
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    # None: the client did not say; limner's own behaviour (see _refusals) applies.
    inpainting_fill: int | None = None
    inpaint_full_res: bool | None = None
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str


# -- request translation ---------------------------------------------------------------


def _refusals(body: _Processing) -> list[str]:
    """What the request asks for that limner cannot do; each would change the image."""
    no = []
    if body.styles:
        no.append("styles (saved prompt styles do not exist here: put the text in the prompt)")
    if body.subseed_strength:
        no.append("subseed_strength > 0 (variation seeds)")
    if body.seed_resize_from_h > 0 or body.seed_resize_from_w > 0:
        no.append("seed_resize_from_h/w")
    if body.restore_faces:
        no.append("restore_faces")
    if body.tiling:
        no.append("tiling")
    if body.s_min_uncond:
        no.append("s_min_uncond")
    if body.s_churn:
        no.append("s_churn")
    if body.s_noise is not None and body.s_noise != 1:
        no.append("s_noise other than 1")
    if body.refiner_checkpoint and body.refiner_checkpoint.lower() not in ("none", ""):
        no.append("refiner_checkpoint")
    if body.script_name:
        no.append(f"script_name ({body.script_name[:40]!r}: scripts do not exist here)")
    if body.alwayson_scripts:
        no.append("alwayson_scripts (" + ", ".join(list(body.alwayson_scripts)[:5]) + ")")
    if body.infotext:
        no.append("infotext (send the fields themselves)")
    if isinstance(body, Txt2ImgRequest) and body.enable_hr:
        no.append("enable_hr (hires fix)")
    if isinstance(body, Img2ImgRequest):
        if body.resize_mode != 0:
            no.append("resize_mode other than 0 (just resize)")
        if len(body.init_images) > 1:
            no.append("more than one of init_images")
        if body.initial_noise_multiplier not in (None, 1, 1.0):
            no.append("initial_noise_multiplier other than 1")
        if body.latent_mask:
            no.append("latent_mask")
        if body.mask:
            if body.inpainting_fill not in (None, 1):
                no.append(
                    "inpainting_fill other than 1 (limner starts from the original pixels: "
                    "send inpainting_fill=1)"
                )
            if body.inpaint_full_res:
                no.append(
                    'inpaint_full_res ("only masked"; limner inpaints at the whole picture: '
                    "send inpaint_full_res=false)"
                )
            blur_x = body.mask_blur if body.mask_blur is not None else body.mask_blur_x
            blur_y = body.mask_blur if body.mask_blur is not None else body.mask_blur_y
            if blur_x != blur_y:
                no.append("mask_blur_x different from mask_blur_y")
    for key in body.override_settings or {}:
        if key not in _OVERRIDABLE:
            no.append(f"override_settings.{key}")
    return no


_OVERRIDABLE = {
    "sd_model_checkpoint",
    CLIP_SKIP_KEY,
    "eta_ddim",
    "eta_ancestral",
    "sd_vae",
    "samples_format",
}


def _model_title(entry) -> str:
    if entry.name == BUILTIN:
        return BUILTIN
    return f"{entry.file_name} [{entry.short_hash}]" if entry.short_hash else entry.file_name


def find_model(svc: Services, value: str) -> str:
    """A registered model's name from what A1111 clients send: a title
    ("name.safetensors [hash]"), a file name, a name, or a hash."""
    wanted = value.strip()
    bare = wanted.rsplit(" [", 1)[0] if wanted.endswith("]") else wanted
    for entry in svc.models():
        names = {entry.name, entry.file_name, _model_title(entry)}
        if wanted in names or bare in names or wanted in (entry.short_hash, entry.sha256):
            return entry.name
    known = ", ".join(e.name for e in svc.models(with_hashes=False))
    raise ApiError(422, f"sd_model_checkpoint: no model {wanted[:100]!r} (known: {known})")


def _fields(svc: Services, body: _Processing, mode: Mode) -> dict:
    """GenerationRequest fields of an A1111 request."""
    overrides = body.override_settings or {}
    refused = _refusals(body)
    if "sd_vae" in overrides and str(overrides["sd_vae"]) not in ("Automatic", "None"):
        refused.append("override_settings.sd_vae other than Automatic")
    if "samples_format" in overrides and str(overrides["samples_format"]).lower() != "png":
        refused.append("override_settings.samples_format other than png")
    sampler = body.sampler_name or body.sampler_index or "Euler"
    schedule = None
    if body.scheduler:
        key = body.scheduler.strip().lower()
        if key not in _SCHEDULERS:
            refused.append(
                f"scheduler {body.scheduler[:40]!r} (known: Automatic, Karras, Exponential)"
            )
        schedule = _SCHEDULERS.get(key)
    eta, eta_refused = _eta(sampler, schedule, body.eta, overrides)
    refused += eta_refused
    if refused:
        raise ApiError(422, "not supported by limner: " + "; ".join(refused))
    model = overrides.get("sd_model_checkpoint")
    fields: dict = {
        "mode": mode,
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "model": find_model(svc, str(model)) if model else svc.current_model(),
        "sampler": sampler,
        "schedule": schedule,
        "steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "seed": body.seed,
        "batch_size": body.batch_size,
        "batch_count": body.n_iter,
        "clip_skip": overrides.get(CLIP_SKIP_KEY, _clip_skip(svc)),
    }
    if eta is not None:
        fields["eta"] = eta
    return fields


def _eta(sampler: str, schedule: str | None, eta: float | None, overrides: dict):
    """A1111's eta (the request's, else the eta_ddim / eta_ancestral option) for samplers
    that take one; other ancestral samplers only at their own eta of 1."""
    try:
        spec = api.resolve_sampler(sampler, schedule).spec
    except InvalidRequestError:
        return None, []  # the unknown name is reported with the request's other fields
    ddim = spec.name == "DDIM"
    value = eta if eta is not None else overrides.get("eta_ddim" if ddim else "eta_ancestral")
    if spec.eta is not None:
        return value, []
    stochastic = spec.name.endswith(" a") or "SDE" in spec.name
    if stochastic and value not in (None, 1, 1.0):
        return None, [f"eta other than 1 with {spec.name}"]
    return None, []


def _clip_skip(svc: Services) -> int:
    value = svc.store.get_setting(CLIP_SKIP_KEY)
    return int(value) if value else 1


def _img2img_fields(svc: Services, body: Img2ImgRequest) -> dict:
    if not body.init_images:
        raise ApiError(422, "init_images: give one image (base64)")
    fields = _fields(svc, body, Mode.INPAINT if body.mask else Mode.IMG2IMG)
    fields["init_image"] = body.init_images[0]
    fields["strength"] = 0.75 if body.denoising_strength is None else body.denoising_strength
    if body.mask:
        fields["mask"] = _a1111_mask(body.mask, invert=bool(body.inpainting_mask_invert), svc=svc)
        fields["mask_blur"] = body.mask_blur if body.mask_blur is not None else body.mask_blur_x
    return fields


def _a1111_mask(value: str, *, invert: bool, svc: Services) -> str:
    """A1111 masks: white is repainted, as limner's; `inpainting_mask_invert` swaps them."""
    if not invert:
        return value
    limits = svc.limits
    checked = check_image_bytes(
        decode_base64(value, what="mask", limits=limits), what="mask", limits=limits
    )
    inverted = Image.eval(open_checked(checked).convert("L"), lambda v: 255 - v)
    return base64.b64encode(encode_png(inverted)).decode("ascii")


# -- running ---------------------------------------------------------------------------


async def _generate(request: Request, body: _Processing, mode: Mode) -> dict:
    svc = services(request)

    def build():
        fields = _img2img_fields(svc, body) if mode is Mode.IMG2IMG else _fields(svc, body, mode)
        return svc.submit(svc.build_request(fields), source="a1111")

    job = await asyncio.to_thread(build)
    job = await svc.wait_for_final(job.id)
    images, infotexts, seeds = await asyncio.to_thread(_job_images, svc, job, body.send_images)
    parameters = body.model_dump(mode="json")
    if isinstance(body, Img2ImgRequest):  # A1111 does not echo the images back
        parameters["init_images"] = None
        parameters["mask"] = None
    return {
        "images": images,
        "parameters": parameters,
        "info": json.dumps(_info(job, body, infotexts, seeds, svc)),
    }


def _job_images(svc: Services, job: Job, send: bool) -> tuple[list[str], list[str], list[int]]:
    if job.status is JobStatus.CANCELLED:
        return [], [], []
    if job.status is not JobStatus.COMPLETED:
        raise ApiError(status_for(job.error_kind), job.error or "the generation failed")
    records = [svc.store.get_image(i) for i in job.image_ids]
    images = (
        [base64.b64encode(svc.image_path(r).read_bytes()).decode("ascii") for r in records]
        if send
        else []
    )
    return images, [r.infotext for r in records], [r.seed for r in records]


def _info(
    job: Job, body: _Processing, infotexts: list[str], seeds: list[int], svc: Services
) -> dict:
    req = job.request
    n = len(seeds)
    model = next((e for e in svc.models() if e.name == req.model), None)
    return {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * n,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * n,
        "seed": req.seed,
        "all_seeds": seeds,
        "subseed": body.subseed if body.subseed >= 0 else req.seed,
        "all_subseeds": [body.subseed if body.subseed >= 0 else s for s in seeds],
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.sampler,
        "cfg_scale": req.guidance_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": req.model,
        "sd_model_hash": model.short_hash if model else None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": req.strength if req.mode is not Mode.TXT2IMG else None,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created_at)),
        "clip_skip": req.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"limner {__version__}",
        "interrupted": job.status is JobStatus.CANCELLED,
        "limner_job_id": job.id,
    }


# -- routes ----------------------------------------------------------------------------


@router.post("/txt2img")
async def txt2img(body: Txt2ImgRequest, request: Request) -> dict:
    return await _generate(request, body, Mode.TXT2IMG)


@router.post("/img2img")
async def img2img(body: Img2ImgRequest, request: Request) -> dict:
    return await _generate(request, body, Mode.IMG2IMG)


@router.get("/options")
def get_options(request: Request) -> dict:
    svc = services(request)
    current = svc.current_model()
    entry = next((e for e in svc.models() if e.name == current), None)
    return {
        "sd_model_checkpoint": _model_title(entry) if entry else current,
        "sd_checkpoint_hash": entry.sha256 if entry else None,
        CLIP_SKIP_KEY: _clip_skip(svc),
        "eta_ddim": 0.0,
        "eta_ancestral": 1.0,
        "sd_vae": "Automatic",
        "samples_format": "png",
    }


@router.post("/options")
def set_options(options: dict[str, Any], request: Request) -> dict:
    svc = services(request)
    unknown = sorted(k for k in options if k not in _OVERRIDABLE)
    if unknown:
        raise ApiError(
            422,
            f"options limner does not have: {', '.join(unknown)[:500]} "
            f"(it has: {', '.join(sorted(_OVERRIDABLE))})",
        )
    fixed = {"eta_ddim": 0.0, "eta_ancestral": 1.0, "sd_vae": "Automatic", "samples_format": "png"}
    for key, value in fixed.items():
        if (
            key in options
            and options[key] != value
            and not (key == "sd_vae" and options[key] == "None")
        ):
            raise ApiError(422, f"{key} can only be {value!r} here")
    if CLIP_SKIP_KEY in options:
        value = options[CLIP_SKIP_KEY]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 12:
            raise ApiError(422, f"{CLIP_SKIP_KEY}: an integer from 1 to 12")
    if "sd_model_checkpoint" in options:
        svc.set_current_model(find_model(svc, str(options["sd_model_checkpoint"])))
    if CLIP_SKIP_KEY in options:
        svc.store.set_setting(CLIP_SKIP_KEY, str(options[CLIP_SKIP_KEY]))
    return get_options(request)


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict]:
    return [
        {
            "title": _model_title(e),
            "model_name": e.name,
            "hash": e.short_hash,
            "sha256": e.sha256,
            "filename": e.file_name or e.name,
            "config": None,
        }
        for e in services(request).models()
    ]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request) -> dict:
    services(request)._models = None
    return {}


@router.get("/samplers")
def samplers() -> list[dict]:
    return [{"name": name, "aliases": [], "options": {}} for name in api.known_samplers()]


@router.get("/schedulers")
def schedulers() -> list[dict]:
    return [
        {
            "name": name.lower(),
            "label": name,
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for name in api.known_schedules()
    ]


@router.get("/scripts")
def scripts() -> dict:
    return {"txt2img": [], "img2img": []}


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict:
    svc = services(request)
    running = svc.worker.current_job_id
    waiting = svc.store.count([JobStatus.QUEUED, JobStatus.RUNNING])
    latest = svc.hub.latest(running) if running else None
    job = svc.store.get(running) if running else None
    return {
        "progress": latest["progress"] if latest else 0.0,
        "eta_relative": latest["eta_s"] if latest else 0.0,
        "state": {
            "skipped": False,
            "interrupted": bool(job and job.cancel_requested),
            "stopping_generation": False,
            "job": f"job {running}" if running else "",
            "job_count": waiting,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created_at))
            if job
            else "0",
            "job_no": 0,
            "sampling_step": latest["step"] if latest else 0,
            "sampling_steps": latest["total"] if latest else 0,
        },
        "current_image": None if skip_current_image or not latest else latest["preview"],
        "textinfo": None,
        "current_task": running,
    }


@router.post("/interrupt")
def interrupt(request: Request) -> dict:
    """Stop the job running now (A1111 interrupts the current generation only)."""
    svc = services(request)
    running = svc.worker.current_job_id
    if running:
        svc.cancel(running)
    return {}


@router.post("/skip")
def skip(request: Request) -> dict:
    return interrupt(request)


@router.post("/png-info")
def png_info(body: PngInfoRequest, request: Request) -> dict:
    limits = services(request).limits
    data = decode_base64(body.image, what="image", limits=limits)
    check_image_bytes(data, what="image", limits=limits)
    with Image.open(io.BytesIO(data)) as img:
        text = dict(getattr(img, "text", None) or {})
    parameters_text = text.pop("parameters", "") or ""
    parsed: dict = {}
    if parameters_text:
        prompt, negative, settings = parse_infotext(parameters_text)
        parsed = {"Prompt": prompt, "Negative prompt": negative, **settings}
    items = {k: v for k, v in text.items() if k != REQUEST_KEY}
    if REQUEST_KEY in text:
        items[REQUEST_KEY] = text[REQUEST_KEY]
    return {"info": parameters_text, "items": items, "parameters": parsed}
