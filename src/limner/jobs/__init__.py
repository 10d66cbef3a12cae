"""Durable jobs: a SQLite queue and gallery, a worker per device, and progress events.

Imports point one way: the server uses this package, this package uses `limner.api`.
"""

from limner.jobs.events import EventHub, Subscription
from limner.jobs.inputs import InputStore
from limner.jobs.store import (
    FINAL_STATUSES,
    MAX_ATTEMPTS,
    ImageRecord,
    Job,
    JobNotFoundError,
    JobStateError,
    JobStatus,
    JobStore,
    QueueFullError,
    Recovery,
    SqliteJobStore,
    new_id,
)
from limner.jobs.worker import Worker, job_event

__all__ = [
    "FINAL_STATUSES",
    "MAX_ATTEMPTS",
    "EventHub",
    "ImageRecord",
    "InputStore",
    "Job",
    "JobNotFoundError",
    "JobStateError",
    "JobStatus",
    "JobStore",
    "QueueFullError",
    "Recovery",
    "SqliteJobStore",
    "Subscription",
    "Worker",
    "job_event",
    "new_id",
]
