"""What every API family shares: the store, the worker, inputs, models and the bounds.

Each API turns its own request format into a dict of `GenerationRequest` fields and
hands it to `Services.submit`, which checks it (bounds, model names, input images) and
queues it. Nothing here generates anything: the worker calls `limner.api`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from limner import api
from limner.errors import InvalidRequestError
from limner.jobs import EventHub, ImageRecord, InputStore, Job, JobStore, Worker, job_event
from limner.jobs.inputs import UPLOAD_PREFIX
from limner.requests import GenerationRequest, Mode, parse_request
from limner.server.errors import ApiError
from limner.server.settings import Limits, ServerSettings

__all__ = ["BUILTIN", "Services", "check_limits", "image_request"]

BUILTIN = "builtin"
CURRENT_MODEL_KEY = "sd_model_checkpoint"  # settings row: the model A1111's options switch
_PLACEHOLDER_REF = UPLOAD_PREFIX + "0" * 64  # stands in for an image while fields are checked
_MODEL_LIST_TTL = 5.0  # seconds a listing of models/ is reused
# The request fields a client over HTTP may set. Deny by default: a field added to
# GenerationRequest later (which may name a server path, as `clip` does) is refused
# here until someone decides it is safe to offer.
HTTP_FIELDS = frozenset(
    {
        "version", "mode", "prompt", "negative_prompt", "model", "sampler", "schedule",
        "steps", "guidance_scale", "guidance_rescale", "width", "height", "seed",
        "batch_size", "batch_count", "eta", "clip_skip", "init_image", "strength", "mask",
        "mask_blur", "keep_unmasked", "outpaint", "candidates", "keep",
    }
)  # fmt: skip


@dataclass
class ModelEntry:
    name: str
    architecture: str
    size_bytes: int
    short_hash: str | None
    sha256: str | None
    file_name: str | None


@dataclass
class Services:
    settings: ServerSettings
    store: JobStore
    hub: EventHub
    worker: Worker
    inputs: InputStore
    outputs_root: Path
    _models: tuple[float, list] | None = None
    _hashes: dict[tuple, str | None] = field(default_factory=dict)
    _models_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def limits(self) -> Limits:
        return self.settings.limits

    # -- files --------------------------------------------------------------------------

    def image_path(self, record: ImageRecord) -> Path:
        """The PNG of a gallery image; ids and names come from our own rows, and the path
        is checked to stay inside outputs/ all the same."""
        path = (self.outputs_root / record.job_id / record.file_name).resolve()
        if self.outputs_root.resolve() not in path.parents:
            raise ApiError(404, f"no file for image {record.id}")
        return path

    # -- models -------------------------------------------------------------------------

    def models(self, *, with_hashes: bool = True) -> list[ModelEntry]:
        """The built-in model and the registered ones (hashes cached by file and mtime)."""
        with self._models_lock:
            now = time.monotonic()
            if self._models is None or now - self._models[0] > _MODEL_LIST_TTL:
                self._models = (now, api.list_models(with_hashes=False))
            entries = []
            for info in self._models[1]:
                builtin = info.name == BUILTIN
                sha = self._hash(info) if with_hashes and not builtin else None
                entries.append(
                    ModelEntry(
                        info.name,
                        info.architecture,
                        info.size_bytes,
                        sha[:10] if sha else None,
                        sha,
                        None if builtin else info.path.name,
                    )
                )
            return entries

    def _hash(self, info) -> str | None:
        path = Path(info.path)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._hashes:
            self._hashes[key] = api.model_sha256(info)  # reads .kind and .path
        return self._hashes[key]

    def model_names(self) -> list[str]:
        return [entry.name for entry in self.models(with_hashes=False)]

    def check_model(self, name: str | None) -> str:
        """A registered model name (or "builtin"); never a path."""
        if name is None or name == "":
            return self.current_model()
        names = self.model_names()
        if name in names:
            return name
        raise ApiError(
            422,
            f"model {name[:100]!r} is not registered on this server (known: {', '.join(names)}); "
            "models are chosen by name, not by path",
        )

    def current_model(self) -> str:
        """The model of requests that name none: the last one chosen through A1111's options,
        else the server's --model, else the built-in model."""
        chosen = self.store.get_setting(CURRENT_MODEL_KEY)
        if chosen and chosen in self.model_names():
            return chosen
        return self.settings.default_model or BUILTIN

    def set_current_model(self, name: str) -> str:
        name = self.check_model(name)
        self.store.set_setting(CURRENT_MODEL_KEY, name)
        return name

    # -- requests -----------------------------------------------------------------------

    def build_request(self, fields: dict) -> GenerationRequest:
        """Check a dict of `GenerationRequest` fields and keep its images: the request to
        queue (images as ``upload:`` references, the model by name, the seed resolved)."""
        from limner.server.uploads import store_image_ref

        # null means "the default", as leaving the field out does (a stored request comes
        # back with its nulls).
        fields = {key: value for key, value in fields.items() if value is not None}
        if "guidance" in fields:  # the studio's name for it; one of the two, not both
            if "guidance_scale" in fields:
                raise ApiError(422, "give guidance or guidance_scale, not both")
            fields["guidance_scale"] = fields.pop("guidance")
        offered = set(GenerationRequest.model_fields) - HTTP_FIELDS
        if refused := sorted(offered & set(fields)):
            raise ApiError(422, f"not available over HTTP: {', '.join(refused)}")
        images = {k: fields[k] for k in ("init_image", "mask") if fields.get(k) is not None}
        # Check every other field first, cheaply, before any image is decoded or kept.
        request = parse_request({**fields, **dict.fromkeys(images, _PLACEHOLDER_REF)})
        api.resolve_sampler(request.sampler, request.schedule)  # unknown names: 422 now
        update: dict = {"model": self.check_model(request.model)}
        sizes = {}
        for name, value in images.items():
            if not isinstance(value, str):
                raise ApiError(422, f"{name}: expected a string (base64 image or reference)")
            ref, checked = store_image_ref(value, what=name, services=self)
            update[name] = ref
            sizes[name] = (checked.width, checked.height)
        request = request.model_copy(update=update)
        check_limits(request, self.limits, sizes.get("init_image"))
        return request.with_seed()

    def submit(self, request: GenerationRequest, *, priority: int = 0, source: str) -> Job:
        job = self.store.submit(
            request, priority=priority, source=source, max_queued=self.limits.max_queued_jobs
        )
        self.hub.publish(job_event(job))
        self.worker.wake()
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.store.cancel(job_id)
        self.worker.cancel(job_id)
        if job.final:
            self.hub.publish(job_event(job))
        return job

    async def wait_for_final(self, job_id: str, poll: float = 1.0) -> Job:
        """Wait for a job to end (events wake the wait; the store has the last word)."""
        async with self.hub.subscribe(job_id) as subscription:
            while True:
                job = await asyncio.to_thread(self.store.get, job_id)
                if job.final:
                    return job
                event = await subscription.get(timeout=poll)
                while event is not None and event.get("type") == "progress":
                    event = await subscription.get(timeout=poll)


def check_limits(
    request: GenerationRequest, limits: Limits, input_size: tuple[int, int] | None
) -> None:
    """The server's bounds, tighter than the request's own (one request must not hold the
    device for hours or fill the disk)."""
    problems = []
    for name in ("prompt", "negative_prompt"):
        if len(getattr(request, name)) > limits.max_prompt_chars:
            problems.append(f"{name} is longer than {limits.max_prompt_chars} characters")
    if request.steps > limits.max_steps:
        problems.append(f"steps must be at most {limits.max_steps}")
    if request.batch_size > limits.max_batch_size:
        problems.append(f"batch_size must be at most {limits.max_batch_size}")
    if request.batch_count > limits.max_batch_count:
        problems.append(f"batch_count must be at most {limits.max_batch_count}")
    if request.total_images > limits.max_images_per_job:
        problems.append(
            f"the job would make {request.total_images} images (batch_size x batch_count, or "
            f"candidates); at most {limits.max_images_per_job}"
        )
    width, height = output_size(request, input_size)
    if width and height and width * height > limits.max_output_pixels:
        problems.append(
            f"the output would be {width}x{height}; at most {limits.max_output_pixels} pixels "
            "are generated"
        )
    if problems:
        raise InvalidRequestError("invalid request: " + "; ".join(problems))


def output_size(
    request: GenerationRequest, input_size: tuple[int, int] | None
) -> tuple[int | None, int | None]:
    if request.mode is Mode.OUTPAINT and input_size and request.outpaint:
        o = request.outpaint
        return input_size[0] + o.left + o.right, input_size[1] + o.up + o.down
    if input_size is not None:
        return request.width or input_size[0], request.height or input_size[1]
    return request.width, request.height


def image_request(job_request: GenerationRequest, record: ImageRecord) -> GenerationRequest:
    """The request that makes this one image again: its seed, a batch of one."""
    return job_request.model_copy(update={"seed": record.seed, "batch_size": 1, "batch_count": 1})


def image_json(record: ImageRecord, job_request: GenerationRequest | None) -> dict:
    return {
        "id": record.id,
        "job_id": record.job_id,
        "index": record.index,
        "prompt": record.prompt,
        "seed": record.seed,
        "width": record.width,
        "height": record.height,
        "created_at": record.created_at,
        "infotext": record.infotext,
        "request": image_request(job_request, record).model_dump(mode="json")
        if job_request is not None
        else None,
        "url": f"/api/v1/images/{record.id}/file",
    }
