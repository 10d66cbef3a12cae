"""limner's public Python API: the one entry for the CLI, the server, the studio and scripts.

    from limner import api
    images = api.generate(api.GenerationRequest(prompt="a red apple", seed=1))
    api.save_images(images, "out/")

Everything here takes and returns plain objects; errors a user can fix are `LimnerError`s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from limner import __version__
from limner.diffusion.loop import Cancelled, StepEvent
from limner.diffusion.samplers import SAMPLERS, ResolvedSampler, resolve_sampler, sampler_names
from limner.errors import InputFileError, InvalidRequestError
from limner.images import (
    check_mask,
    extend_canvas,
    fit_size,
    load_image,
    overlay_unmasked,
    prepare_input,
)
from limner.infotext import a1111_params, format_infotext, parse_infotext
from limner.models.latent import LatentDiffusionModel
from limner.models.latent_rgb import LatentRGB
from limner.models.loading import ModelRef, load_model, registered_models, resolve_model
from limner.pipelines import latent as pipelines
from limner.pipelines.steps import tensor_to_pil
from limner.pngmeta import read_png_metadata, save_png
from limner.requests import GenerationRequest, Mode, Outpaint, parse_request
from limner.runtime.device import DeepCacheOptions, Precision, RuntimeOptions

__all__ = [
    "Cancelled",
    "GeneratedImage",
    "GenerationRequest",
    "Mode",
    "Outpaint",
    "Progress",
    "RuntimeOptions",
    "DeepCacheOptions",
    "Precision",
    "convert_checkpoint",
    "generate",
    "generate_many",
    "image_info",
    "list_models",
    "load",
    "parse_request",
    "reproduce_request",
    "sampler_names",
    "save_images",
]

OUTPAINT_OVERLAP = 8  # pixels of the original that outpainting repaints along the seam


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    index: int  # position among all the request's images (batch_count * batch_size)
    request: GenerationRequest  # the request with its seed resolved
    infotext: str  # A1111 "parameters" text

    def request_json(self) -> str:
        """The JSON stored in the PNG: the request, this image's place in it, the model."""
        return json.dumps(
            {
                "request": self.request.model_dump(mode="json"),
                "index": self.index,
                "seed": self.seed,
                "model_sha256": self.model_sha256,
                "limner": __version__,
                "runtime": self.runtime,
            },
            sort_keys=True,
        )

    model_sha256: str | None = None
    clip_score: float | None = None  # set when the image was kept among ranked candidates
    runtime: dict | None = None  # the speed settings that made it (precision resolved)


@dataclass
class Progress:
    """A step of a generation: which batch, which step, how fast, and the model's map
    from its latents to RGB for a cheap preview (None: the model has none)."""

    batch: int
    batch_count: int
    step: StepEvent
    latent_rgb: LatentRGB | None = None


# One model stays loaded between calls; loading is the slow part of a first image.
_cache: dict[tuple, LatentDiffusionModel] = {}


def load(
    model: str | os.PathLike | None = None,
    *,
    prediction_type: str | None = None,
    runtime: RuntimeOptions | None = None,
) -> LatentDiffusionModel:
    """Load a model by path or registered name (None: the built-in model), cached, and put
    it on the fast path `runtime` asks for (default: chosen for this CPU)."""
    from limner.pipelines.steps import text_encoders_released
    from limner.runtime.device import resolve_runtime
    from limner.runtime.prepare import prepare_model

    runtime = runtime or RuntimeOptions()
    ref = resolve_model(model)
    key = (ref.kind, str(ref.path), prediction_type, runtime.model_key())
    if key in _cache and text_encoders_released(_cache[key]):
        del _cache[key]  # released to save memory: the next prompt needs them again
    if key not in _cache:
        _cache.clear()
        resolved = resolve_runtime(runtime)
        loaded = load_model(
            ref, prediction_type=prediction_type, torch_dtype=resolved.storage_dtype
        )
        prepare_model(loaded, resolved)
        if loaded.sha256 is None and ref.path is not None:
            loaded.sha256 = model_sha256(ref)
        _cache[key] = loaded
    model = _cache[key]
    model.name = ref.name  # one file may be registered under several names
    return model


def runtime_record(runtime: RuntimeOptions | None, model: LatentDiffusionModel) -> dict:
    """The runtime options to store with an image, "auto" replaced by what ran, so that
    `generate_from` remakes it with the same numerics on another machine."""
    from limner.runtime.prepare import stores_fp16_weights

    record = (runtime or RuntimeOptions()).to_dict()
    record["precision"] = "bf16" if model.dtype == torch.bfloat16 else "fp32"
    record["fp16_weights"] = stores_fp16_weights(model.unet)  # rounds fp32 files' weights
    for machine_only in ("threads", "release_text_encoder"):
        record.pop(machine_only)
    return record


def _speed(
    runtime: RuntimeOptions | None, model: LatentDiffusionModel, may_release: bool
) -> pipelines.Speed:
    """The per-run speed settings of `runtime` for `model`. The text encoder is released
    only where `may_release`: after the last prompt encoding of a call, of a model the
    API loaded itself (a caller's own model is never taken apart under it)."""
    from limner.runtime.memory import memory_is_tight
    from limner.runtime.tiny_decoder import cached_tiny_decoder

    runtime = runtime or RuntimeOptions()
    release = runtime.release_text_encoder
    if release is None:
        release = memory_is_tight()
    release = release and may_release
    tiny = None
    if runtime.fast_decode:
        tiny = cached_tiny_decoder(runtime.tiny_decoder, dtype=model.dtype)
    return pipelines.Speed(
        deepcache=runtime.deepcache,
        tiny_decoder=tiny,
        release_text_encoder=release,
        token_merging=runtime.token_merging,
    )


def model_sha256(ref: ModelRef) -> str | None:
    from limner.checkpoints.hashing import file_sha256, folder_sha256

    if ref.kind == "single_file":
        return file_sha256(ref.path)
    if ref.kind == "diffusers":
        return folder_sha256(ref.path)
    return None


@dataclass
class _Inputs:
    """Input images of a request, read and brought to the generation size."""

    width: int
    height: int
    image: Image.Image | None = None
    mask: Image.Image | None = None


def _read_inputs(req: GenerationRequest, default_size: Callable[[], int]) -> _Inputs:
    """Read and check the input images; `default_size` is asked only for txt2img, so that
    bad input files are refused before a model is loaded."""
    if req.mode is Mode.TXT2IMG:
        if req.width and req.height:
            return _Inputs(req.width, req.height)
        size = default_size()
        return _Inputs(req.width or size, req.height or size)
    image = load_image(req.init_image, what="input image")
    mask = None
    if req.mode is Mode.INPAINT:
        mask = load_image(req.mask, what="mask")
        check_mask(mask, image)
    if req.mode is Mode.OUTPAINT:
        o = req.outpaint
        width, height = fit_size(None, None, image)
        image = prepare_input(image, (width, height))
        image, mask = extend_canvas(image, o.left, o.right, o.up, o.down, OUTPAINT_OVERLAP)
        return _Inputs(image.width, image.height, image, mask)
    width, height = fit_size(req.width, req.height, image)
    image = prepare_input(image, (width, height))
    if mask is not None and mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    return _Inputs(width, height, image, mask)


def _sampling(req: GenerationRequest, inputs: _Inputs) -> pipelines.Sampling:
    return pipelines.Sampling(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=inputs.width,
        height=inputs.height,
        sampler=req.sampler,
        schedule=req.schedule,
        steps=req.steps,
        guidance_scale=req.guidance_scale,
        guidance_rescale=req.guidance_rescale,
        eta=req.eta,
        clip_skip=req.clip_skip,
        strength=1.0 if req.mode is Mode.TXT2IMG else req.strength,
    )


def generate(
    request: GenerationRequest | dict,
    *,
    model: LatentDiffusionModel | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    runtime: RuntimeOptions | None = None,
) -> list[GeneratedImage]:
    """Run a request: batch_count batches of batch_size images, seeds seed, seed+1, ..."""
    owned = model is None  # loaded (and cached) here, so it may be released and reloaded
    req, sampler, scorer, model, inputs = _start(request, model, runtime)
    sampling = _sampling(req, inputs)
    results: list[GeneratedImage] = []
    for batch in range(req.batch_runs):
        first = batch * req.batch_size
        seeds = [req.seed + first + j for j in range(req.batch_size)]
        hooks = pipelines.Hooks(
            callback=(
                lambda event, b=batch: on_progress(
                    Progress(b, req.batch_runs, event, model.latent_rgb)
                )
            )
            if on_progress
            else None,
            should_stop=should_stop,
        )
        speed = _speed(runtime, model, may_release=owned and batch == req.batch_runs - 1)
        pixels = _run_batch(model, req, sampling, seeds, inputs, hooks, speed)
        for j, image in enumerate(tensor_to_pil(pixels)):
            if inputs.mask is not None and req.keep_unmasked:
                image = overlay_unmasked(image, inputs.image, inputs.mask, req.mask_blur)
            results.append(
                GeneratedImage(
                    image=image,
                    seed=seeds[j],
                    index=first + j,
                    request=req,
                    infotext=_infotext(req, model, sampler, seeds[j], inputs, runtime),
                    model_sha256=model.sha256,
                    runtime=runtime_record(runtime, model),
                )
            )
    if scorer is not None:
        results = _keep_best(results, req, scorer)
    return results


def _start(request: GenerationRequest | dict, model, runtime):
    """Check a request and everything it reads, then load its model: the request (seed
    drawn), sampler, CLIP scorer (or None), model and input images."""
    req = parse_request(request) if isinstance(request, dict) else request
    req = req.with_seed()
    sampler = resolve_sampler(req.sampler, req.schedule)  # fail before loading a model
    if req.eta is not None and sampler.spec.eta is None:
        takes_eta = ", ".join(name for name, spec in SAMPLERS.items() if spec.eta is not None)
        raise InvalidRequestError(
            f"sampler {sampler.spec.name!r} takes no eta; samplers that do: {takes_eta}"
        )
    scorer = _ranker(req)  # a bad CLIP folder fails before any image is made
    if model is None:
        resolve_model(req.model)  # an unknown model name fails before any file is read
        inputs = _read_inputs(req, lambda: load(req.model, runtime=runtime).default_size)
        model = load(req.model, runtime=runtime)
    else:
        inputs = _read_inputs(req, lambda: model.default_size)
    f = model.vae_scale_factor
    if inputs.width % f or inputs.height % f:
        raise InvalidRequestError(f"width and height must be multiples of {f} for this model")
    return req, sampler, scorer, model, inputs


def generate_many(
    requests: Sequence[GenerationRequest | dict],
    *,
    model: LatentDiffusionModel | None = None,
    runtime: RuntimeOptions | None = None,
    max_batch: int = 8,
) -> list[list[GeneratedImage]]:
    """Run several requests, each as `generate` runs it, in fewer UNet calls: text-to-image
    requests for one image each that differ only in prompt and seed are denoised
    together, up to `max_batch` at a time, each image from its own prompt and seed (so
    the same image as alone, to float rounding). Small models gain most: a UNet step
    costs less per image in a bigger batch. The results follow the requests' order."""
    if max_batch < 1:
        raise InvalidRequestError("max_batch must be at least 1")
    reqs = [(parse_request(r) if isinstance(r, dict) else r).with_seed() for r in requests]
    results: list[list[GeneratedImage] | None] = [None] * len(reqs)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(reqs):
        if r.mode is Mode.TXT2IMG and r.total_images == 1 and r.candidates is None:
            settings = r.model_dump(mode="json", exclude={"prompt", "seed"})
            groups.setdefault(json.dumps(settings, sort_keys=True), []).append(i)
        else:
            results[i] = generate(r, model=model, runtime=runtime)
    for members in groups.values():
        for start in range(0, len(members), max_batch):
            chunk = members[start : start + max_batch]
            batched = _generate_batched([reqs[i] for i in chunk], model, runtime)
            for i, images in zip(chunk, batched, strict=True):
                results[i] = images
    return results  # type: ignore[return-value]


def _generate_batched(reqs: list[GenerationRequest], model, runtime) -> list[list[GeneratedImage]]:
    """One-image txt2img requests that share their settings, in one denoising run (one at a
    time when their prompts encode to different lengths)."""
    owned = model is None  # loaded (and cached) here, so it may be released and reloaded
    first, sampler, _, model, inputs = _start(reqs[0], model, runtime)
    if len(reqs) == 1:
        return [generate(first, model=model, runtime=runtime)]
    sampling = _sampling(first, inputs)
    sampling.prompt = tuple(r.prompt for r in reqs)
    seeds = [r.seed for r in reqs]
    try:
        speed = _speed(runtime, model, may_release=owned)
        pixels = pipelines.txt2img(model, sampling, seeds, None, speed)
    except InvalidRequestError:  # prompts of different chunk counts cannot share a batch
        return [generate(r, model=model, runtime=runtime) for r in reqs]
    return [
        [
            GeneratedImage(
                image=image,
                seed=r.seed,
                index=0,
                request=r,
                infotext=_infotext(r, model, sampler, r.seed, inputs, runtime),
                model_sha256=model.sha256,
                runtime=runtime_record(runtime, model),
            )
        ]
        for r, image in zip(reqs, tensor_to_pil(pixels), strict=True)
    ]


def _ranker(req: GenerationRequest):
    if req.candidates is None:
        return None
    from limner.ranking import cached_clip

    return cached_clip(req.clip)


def _keep_best(
    results: list[GeneratedImage], req: GenerationRequest, scorer
) -> list[GeneratedImage]:
    """The `keep` candidates with the highest CLIP score, best first; each keeps its seed
    and index, so `generate_from` remakes it."""
    from limner.ranking import best_indices

    scores = scorer.scores(req.prompt, [r.image for r in results])
    for r, score in zip(results, scores, strict=True):
        r.clip_score = score
    return [results[i] for i in best_indices(scores, req.keep)]


def _run_batch(model, req, sampling, seeds, inputs, hooks, speed) -> torch.Tensor:
    if req.mode is Mode.TXT2IMG:
        return pipelines.txt2img(model, sampling, seeds, hooks, speed)
    if req.mode is Mode.IMG2IMG:
        return pipelines.img2img(model, sampling, seeds, inputs.image, hooks, speed)
    return pipelines.inpaint(model, sampling, seeds, inputs.image, inputs.mask, hooks, speed)


def _infotext(
    req: GenerationRequest,
    model: LatentDiffusionModel,
    sampler: ResolvedSampler,
    seed: int,
    inputs: _Inputs,
    runtime: RuntimeOptions | None = None,
) -> str:
    edits = req.mode is not Mode.TXT2IMG
    params = a1111_params(
        steps=req.steps,
        sampler=sampler.spec.name,
        schedule_type=sampler.schedule.value,
        cfg_scale=req.guidance_scale,
        seed=seed,
        size=(inputs.width, inputs.height),
        model_hash=model.sha256[:10] if model.sha256 else None,
        model=model.name,
        denoising_strength=req.strength if edits else None,
        clip_skip=req.clip_skip,
        mask_blur=req.mask_blur if inputs.mask is not None else None,
        rng="CPU",
        eta=req.eta if sampler.spec.name != "DDIM" else None,
        eta_ddim=req.eta if sampler.spec.name == "DDIM" else None,
        token_merging_ratio=runtime.token_merging if runtime else None,
        version=f"limner {__version__}",
    )
    return format_infotext(req.prompt, req.negative_prompt, params)


def save_images(
    images: list[GeneratedImage], output: str | os.PathLike | None = None
) -> list[Path]:
    """Write PNGs with provenance. `output`: a folder (default: the home folder's outputs/),
    or a file name ending in .png (numbered -1, -2, ... when there are several images)."""
    from limner.home import outputs_dir

    target = Path(output).expanduser() if output else outputs_dir()
    if target.suffix.lower() == ".png":
        folder = target.parent
        names = (
            [target.name]
            if len(images) == 1
            else [f"{target.stem}-{i + 1}.png" for i in range(len(images))]
        )
    else:
        folder = target
        names = [_unique_name(folder, img) for img in images]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, name in zip(images, names, strict=True):
        path = folder / name
        save_png(img.image, path, parameters=img.infotext, request_json=img.request_json())
        paths.append(path)
    return paths


def _unique_name(folder: Path, img: GeneratedImage) -> str:
    existing = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
    stem = f"{existing:05d}-{img.seed}"
    name, n = f"{stem}.png", 1
    while (folder / name).exists():
        name, n = f"{stem}-{n}.png", n + 1
    return name


@dataclass
class ImageInfo:
    parameters: str | None
    prompt: str | None
    negative_prompt: str | None
    settings: dict[str, str]
    request: dict | None


def image_info(path: str | os.PathLike) -> ImageInfo:
    """What a PNG says about how it was made (A1111 parameters and limner's request)."""
    meta = read_png_metadata(path)
    prompt = negative = None
    settings: dict[str, str] = {}
    if meta.parameters:
        prompt, negative, settings = parse_infotext(meta.parameters)
    return ImageInfo(meta.parameters, prompt, negative, settings, meta.request)


def reproduce_request(path: str | os.PathLike) -> tuple[GenerationRequest, int]:
    """The request that made a limner PNG, and the image's index in it."""
    meta = read_png_metadata(path)
    if not meta.request or "request" not in meta.request:
        raise InputFileError(
            f"{path} carries no limner request (only PNGs written by limner can be reproduced exactly)"
        )
    req = parse_request(meta.request["request"])
    return req, int(meta.request.get("index", 0))


def generate_from(path: str | os.PathLike, **kwargs) -> GeneratedImage:
    """Make the image of a limner PNG again: the same request, the same batch, that image."""
    req, index = reproduce_request(path)
    batch = index // req.batch_size
    # Re-run only the batch that held the image: a batch is one UNet call, and the same
    # rows give the same floats, so the PNG comes out byte for byte the same.
    single = req.model_copy(
        update={
            "seed": req.seed + batch * req.batch_size,
            "batch_count": 1,
            "candidates": None,  # one candidate's batch, remade without ranking
            "keep": 1,
            "clip": None,
        }
    )
    if kwargs.get("runtime") is None:
        stored = read_png_metadata(path).request.get("runtime")
        kwargs["runtime"] = RuntimeOptions.from_dict(stored) if stored else None
    images = generate(single, **kwargs)
    image = images[index - batch * req.batch_size]
    image.index = index
    image.request = req
    return image


@dataclass
class ModelInfo:
    name: str
    kind: str
    path: Path | None
    architecture: str
    size_bytes: int
    short_hash: str | None


def list_models(*, with_hashes: bool = True) -> list[ModelInfo]:
    """The built-in model and every model registered in the home folder."""
    from limner.checkpoints.hashing import a1111_short_hash
    from limner.models.builtin import builtin_dir, has_trained_weights

    infos = [
        ModelInfo(
            "builtin",
            "builtin",
            builtin_dir(),
            "builtin (MiniLM-conditioned, 128x128)"
            + ("" if has_trained_weights() else ", untrained"),
            _size_of(builtin_dir()),
            None,
        )
    ]
    for ref in registered_models():
        sha = model_sha256(ref) if with_hashes else None
        infos.append(
            ModelInfo(
                ref.name,
                ref.kind,
                ref.path,
                _architecture_of(ref),
                _size_of(ref.path),
                a1111_short_hash(sha) if sha else None,
            )
        )
    return infos


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _architecture_of(ref: ModelRef) -> str:
    """Architecture from the file's keys and shapes, without loading weights."""
    try:
        if ref.kind == "single_file":
            from limner.checkpoints.single_file import describe_checkpoint

            return describe_checkpoint(ref.path)
        index = json.loads((ref.path / "model_index.json").read_text())
        if "text_encoder_2" in index:
            return "sdxl (diffusers)"
        return f"{index.get('_class_name', 'diffusers')} (diffusers)"
    except Exception as err:  # a broken file is listed with what is wrong, not skipped
        return f"unreadable: {err}"


def convert_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False
) -> int:
    """Convert a pickle checkpoint to safetensors without running its code; returns tensors written."""
    from limner.checkpoints.safe_load import convert_pickle_to_safetensors

    return convert_pickle_to_safetensors(Path(src), Path(dst), overwrite=overwrite)


def known_samplers() -> dict[str, str]:
    return {name: spec.description for name, spec in SAMPLERS.items()}


def known_schedules() -> list[str]:
    """Schedule types by their A1111 names (Automatic: the sampler's own default)."""
    from limner.diffusion.samplers import ScheduleType

    return [schedule.value for schedule in ScheduleType]
