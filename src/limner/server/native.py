"""The native API, ``/api/v1/``: jobs, events, the gallery, models (docs/api.md)."""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from limner import __version__, api
from limner.jobs import Job, JobStatus, job_event
from limner.server.errors import ApiError
from limner.server.services import Services, image_json

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["native"])

_ID = re.compile(r"[0-9a-f]{32}")
KEEPALIVE_S = 15.0


def services(request: Request) -> Services:
    return request.app.state.services


def _checked_id(value: str, what: str) -> str:
    """Ids are 32 hex digits; anything else (``..``, slashes, encodings) is simply unknown."""
    if not _ID.fullmatch(value):
        raise ApiError(404, f"no {what} with id {value[:40]!r}")
    return value


def job_json(job: Job) -> dict:
    data = job.model_dump(mode="json")
    data.pop("version", None)
    return data


class JobSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request: dict = Field(description="GenerationRequest fields; images as base64 or references")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")


class PriorityChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=-1000, le=1000)


@router.get("/health")
def health() -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/models")
def models(request: Request) -> dict:
    svc = services(request)
    entries = svc.models()
    return {
        "models": [
            {
                "name": e.name,
                "architecture": e.architecture,
                "size_bytes": e.size_bytes,
                "short_hash": e.short_hash,
            }
            for e in entries
        ],
        "default": svc.current_model(),
    }


@router.get("/samplers")
def samplers() -> dict:
    return {"samplers": list(api.known_samplers()), "schedules": api.known_schedules()}


@router.post("/jobs", status_code=201)
def submit_job(body: JobSubmission, request: Request) -> dict:
    svc = services(request)
    generation = svc.build_request(body.request)
    return job_json(svc.submit(generation, priority=body.priority, source="native"))


@router.get("/jobs")
def list_jobs(
    request: Request,
    status: str | None = Query(None, description="comma-separated statuses"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
) -> dict:
    svc = services(request)
    statuses = None
    if status:
        try:
            statuses = [JobStatus(s.strip()) for s in status.split(",") if s.strip()]
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise ApiError(422, f"status: expected some of {known}") from None
    jobs = svc.store.list_jobs(statuses=statuses, limit=limit, offset=offset)
    return {"jobs": [job_json(j) for j in jobs], "total": svc.store.count(statuses)}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict:
    return job_json(services(request).store.get(_checked_id(job_id, "job")))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> dict:
    return job_json(services(request).cancel(_checked_id(job_id, "job")))


@router.post("/jobs/{job_id}/priority")
def set_priority(job_id: str, body: PriorityChange, request: Request) -> dict:
    svc = services(request)
    job = svc.store.set_priority(_checked_id(job_id, "job"), body.priority)
    svc.hub.publish(job_event(job))
    return job_json(job)


@router.get("/events")
async def events(request: Request, job_id: str | None = None) -> StreamingResponse:
    svc = services(request)
    first = None
    if job_id is not None:
        first = job_event(svc.store.get(_checked_id(job_id, "job")))

    async def stream():
        async with svc.hub.subscribe(job_id) as subscription:
            yield ": connected\n\n"  # headers go out now, not with the first event
            if first is not None:
                yield _sse(first)
                if first["final"]:
                    return
                latest = svc.hub.latest(job_id)
                if latest is not None:
                    yield _sse(latest)
            while True:
                event = await subscription.get(timeout=KEEPALIVE_S)
                if event is None:
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(event)
                if job_id is not None and event.get("final"):
                    return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, allow_nan=False)}\n\n"


@router.get("/images")
def list_images(
    request: Request,
    q: str | None = Query(None, max_length=1000, description="text the prompt contains"),
    job_id: str | None = Query(None, max_length=32),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
) -> dict:
    svc = services(request)
    records = svc.store.list_images(query=q, job_id=job_id, limit=limit, offset=offset)
    requests = svc.store.job_requests([r.job_id for r in records])
    return {
        "images": [image_json(r, requests.get(r.job_id)) for r in records],
        "total": svc.store.count_images(query=q, job_id=job_id),
    }


@router.get("/images/{image_id}")
def get_image(image_id: str, request: Request) -> dict:
    svc = services(request)
    record = svc.store.get_image(_checked_id(image_id, "image"))
    return image_json(record, svc.store.job_requests([record.job_id]).get(record.job_id))


@router.get("/images/{image_id}/file")
def image_file(image_id: str, request: Request) -> FileResponse:
    svc = services(request)
    record = svc.store.get_image(_checked_id(image_id, "image"))
    path = svc.image_path(record)
    if not path.is_file():
        raise ApiError(404, f"the file of image {image_id} is gone")
    return FileResponse(path, media_type="image/png", filename=f"{image_id}.png")


@router.delete("/images/{image_id}", status_code=204)
def delete_image(image_id: str, request: Request) -> Response:
    svc = services(request)
    record = svc.store.delete_image(_checked_id(image_id, "image"))
    # The row goes first: a crash between the two leaves a stray file, never a row
    # pointing at nothing.
    svc.image_path(record).unlink(missing_ok=True)
    return Response(status_code=204)
