"""The worker: a thread that runs queued jobs one at a time through `limner.api`.

One worker per device: a generation uses the whole device, so jobs on it run in turn.
For each job it claims, the worker clears what an interrupted earlier attempt may have
left in the job's output folder, turns the request's ``upload:`` references into file
paths, calls `api.generate` with a progress callback (events with step, total, ETA and a
64 px preview) and a stop check (the job's cancel flag), saves the PNGs with
`api.save_images` under ``outputs/<job id>/`` and completes the job with its image rows
in one transaction.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from limner import api
from limner.errors import LimnerError
from limner.jobs.events import EventHub
from limner.jobs.inputs import InputStore
from limner.jobs.preview import preview_png_base64
from limner.jobs.store import ImageRecord, Job, JobStatus, JobStore, new_id

__all__ = ["Worker", "job_event"]

log = logging.getLogger("limner.jobs")


def job_event(job: Job) -> dict:
    """The event that says a job changed state."""
    return {
        "type": "status",
        "job_id": job.id,
        "status": job.status.value,
        "final": job.final,
        "progress": job.progress,
        "attempts": job.attempts,
        "error": job.error,
        "image_ids": job.image_ids,
    }


class Worker:
    """Runs the jobs of `store` on one device, in a background thread."""

    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        *,
        outputs_root: Path,
        inputs: InputStore,
        name: str = "default",
        idle_poll: float = 1.0,
        progress_interval: float = 0.25,
        cancel_poll: float = 0.5,
        preview_size: int = 64,
    ) -> None:
        self.store = store
        self.hub = hub
        self.outputs_root = Path(outputs_root)
        self.inputs = inputs
        self.name = name
        self.idle_poll = idle_poll
        self.progress_interval = progress_interval
        self.cancel_poll = cancel_poll
        self.preview_size = preview_size
        self._wake = threading.Event()
        self._shutdown = threading.Event()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._current: str | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"limner-worker-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the current step; the running job goes back to the queue."""
        self._shutdown.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was submitted: look at the queue now rather than at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job if it is the one running (the store has its cancel flag already)."""
        with self._lock:
            if self._current == job_id:
                self._cancel.set()

    @property
    def current_job_id(self) -> str | None:
        with self._lock:
            return self._current

    # -- running ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._shutdown.is_set():
            try:
                ran = self.run_once()
            except Exception:  # the store failing (disk full, ...) must not end the worker
                log.exception("worker %s: error outside a job", self.name)
                ran = None
            if ran is None:
                self._wake.wait(self.idle_poll)
                self._wake.clear()

    def run_once(self) -> Job | None:
        """Claim the next job and run it; the job as it ended, or None if none was queued."""
        if self._shutdown.is_set():
            return None
        job = self.store.claim_next()
        if job is None:
            return None
        with self._lock:
            self._current = job.id
            self._cancel.clear()
        try:
            self.hub.publish(job_event(job))
            final = self._run(job)
        finally:
            with self._lock:
                self._current = None
        self.hub.publish(job_event(final))
        return final

    def _run(self, job: Job) -> Job:
        folder = self.outputs_root / job.id
        # Files of an attempt the server did not live to record: never two copies.
        shutil.rmtree(folder, ignore_errors=True)
        try:
            request = self.inputs.resolve(job.request)
            images = api.generate(
                request, on_progress=self._progress(job), should_stop=self._stopper(job)
            )
            paths = api.save_images(images, folder)
            now = time.time()
            records = [
                ImageRecord(
                    id=new_id(),
                    job_id=job.id,
                    index=image.index,
                    file_name=path.name,
                    prompt=job.request.prompt,
                    seed=image.seed,
                    width=image.image.width,
                    height=image.image.height,
                    created_at=now,
                    infotext=image.infotext,
                )
                for image, path in zip(images, paths, strict=True)
            ]
            return self.store.complete(job.id, records)
        except api.Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            if self._shutdown.is_set() and not self.store.is_cancel_requested(job.id):
                log.info("job %s goes back to the queue: the server is stopping", job.id)
                return self.store.requeue(job.id)
            return self.store.mark_cancelled(job.id)
        except LimnerError as err:
            shutil.rmtree(folder, ignore_errors=True)
            return self.store.fail(job.id, str(err), type(err).__name__)
        except Exception as err:
            log.exception("job %s failed", job.id)
            shutil.rmtree(folder, ignore_errors=True)
            return self.store.fail(
                job.id, f"internal error: {type(err).__name__}: {err}", "internal"
            )

    def _stopper(self, job: Job):
        last_check = time.monotonic()

        def should_stop() -> bool:
            nonlocal last_check
            if self._cancel.is_set() or self._shutdown.is_set():
                return True
            now = time.monotonic()
            if now - last_check >= self.cancel_poll:
                # A cancel that reached the store before this job was marked current.
                last_check = now
                if self.store.is_cancel_requested(job.id):
                    self._cancel.set()
                    return True
            return False

        return should_stop

    def _progress(self, job: Job):
        last_sent = 0.0

        def on_progress(p: api.Progress) -> None:
            nonlocal last_sent
            step = p.step
            done = step.index + 1
            now = time.monotonic()
            if done < step.total and now - last_sent < self.progress_interval:
                return
            last_sent = now
            fraction = (p.batch + step.fraction) / p.batch_count
            seconds_per_batch = step.elapsed / step.fraction if step.fraction > 0 else 0.0
            eta = step.eta_seconds + (p.batch_count - p.batch - 1) * seconds_per_batch
            self.store.set_progress(job.id, fraction)
            self.hub.publish(
                {
                    "type": "progress",
                    "job_id": job.id,
                    "status": JobStatus.RUNNING.value,
                    "batch": p.batch,
                    "batch_count": p.batch_count,
                    "step": done,
                    "total": step.total,
                    "progress": fraction,
                    "eta_s": round(eta, 3),
                    "preview": preview_png_base64(step.latents, self.preview_size, p.latent_rgb),
                }
            )

        return on_progress
