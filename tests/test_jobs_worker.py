"""The worker on its own (no HTTP): runs jobs through `limner.api`, records images once,
fails with the reason, stops on cancel, and on shutdown puts its job back in the queue."""

from __future__ import annotations

import time

import pytest

from limner.jobs import EventHub, InputStore, JobStatus, SqliteJobStore, Worker
from limner.requests import GenerationRequest
from test_server_helpers import make_image, png_bytes


@pytest.fixture
def parts(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    hub = EventHub()
    inputs = InputStore(tmp_path / "uploads")
    worker = Worker(store, hub, outputs_root=tmp_path / "outputs", inputs=inputs, idle_poll=0.05)
    yield store, hub, inputs, worker
    worker.stop()
    store.close()


def req(model: str, **fields) -> GenerationRequest:
    defaults = {"prompt": "a red apple", "steps": 2, "width": 64, "height": 64, "seed": 4}
    return GenerationRequest(model=model, **{**defaults, **fields})


def wait(store, job_id, statuses, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} stayed {store.get(job_id).status}")


def test_run_once_completes_with_images_on_disk(parts, tiny_sd1, tmp_path):
    store, _, inputs, worker = parts
    ref = inputs.put(png_bytes(make_image(64)))
    job = store.submit(req(tiny_sd1, mode="img2img", init_image=ref, batch_size=2))
    done = worker.run_once()
    assert done.id == job.id and done.status is JobStatus.COMPLETED
    images = store.list_images(job_id=job.id)
    assert [i.seed for i in sorted(images, key=lambda i: i.index)] == [4, 5]
    files = sorted((tmp_path / "outputs" / job.id).iterdir())
    assert [f.name for f in files] == sorted(i.file_name for i in images)
    assert worker.run_once() is None  # nothing left


def test_a_failing_job_records_its_reason(parts, tiny_sd1, tmp_path):
    store, _, inputs, worker = parts
    job = store.submit(req(tiny_sd1, sampler="Nope"))
    done = worker.run_once()
    assert done.status is JobStatus.FAILED and done.error_kind == "InvalidRequestError"
    assert "Nope" in done.error
    assert not (tmp_path / "outputs" / job.id).exists()


def test_cancel_stops_a_running_job(parts, tiny_sd1):
    store, _, _, worker = parts
    job = store.submit(req(tiny_sd1, steps=150, batch_count=5))
    worker.start()
    wait(store, job.id, {JobStatus.RUNNING})
    store.cancel(job.id)
    worker.cancel(job.id)
    done = wait(store, job.id, {JobStatus.CANCELLED, JobStatus.COMPLETED})
    assert done.status is JobStatus.CANCELLED and done.image_ids == []


def test_shutdown_puts_the_running_job_back(parts, tiny_sd1):
    store, _, _, worker = parts
    job = store.submit(req(tiny_sd1, steps=150, batch_count=5))
    worker.start()
    wait(store, job.id, {JobStatus.RUNNING})
    worker.stop()
    back = store.get(job.id)
    assert back.status is JobStatus.QUEUED and back.attempts == 0 and back.image_ids == []
