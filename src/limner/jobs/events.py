"""Job events fanned out from the worker thread to asyncio subscribers (SSE streams).

The worker publishes plain dicts from its own thread; each subscriber owns a bounded
asyncio queue on its event loop. A slow subscriber loses its oldest events rather than
making the queue grow: progress is a stream of snapshots, and the final event of a job
is always the newest one, so it is never the one dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["EventHub", "Subscription"]

MAX_PENDING = 64  # events held for one subscriber before its oldest are dropped


@dataclass(eq=False)
class Subscription:
    loop: asyncio.AbstractEventLoop
    job_id: str | None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(MAX_PENDING))

    def _put(self, event: dict) -> None:
        # Runs on the subscriber's loop.
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> dict | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class EventHub:
    """Publish from any thread; subscribe from async code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._latest: dict[str, dict] = {}  # running job id -> its last progress event

    def publish(self, event: dict) -> None:
        job_id = event.get("job_id")
        with self._lock:
            if job_id is not None:
                if event.get("type") == "progress":
                    self._latest[job_id] = event
                elif event.get("final"):
                    self._latest.pop(job_id, None)
            targets = [s for s in self._subscribers if s.job_id in (None, job_id)]
        for sub in targets:
            try:
                sub.loop.call_soon_threadsafe(sub._put, event)
            except RuntimeError:  # the subscriber's loop has closed
                self._remove(sub)

    def latest(self, job_id: str) -> dict | None:
        """The last progress event of a running job."""
        with self._lock:
            return self._latest.get(job_id)

    @asynccontextmanager
    async def subscribe(self, job_id: str | None = None) -> AsyncIterator[Subscription]:
        """Events of one job (or of all jobs, for None) while the context is open."""
        sub = Subscription(asyncio.get_running_loop(), job_id)
        with self._lock:
            self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)
