"""The durable job queue and gallery: jobs and their images, in SQLite.

A store is an abstract service (`JobStore`) with one implementation, `SqliteJobStore`
(WAL journal, one connection behind a lock). Every state change of a job is one
transaction guarded by the job's current status, so a job reaches exactly one final
state (completed, failed or cancelled), and its image rows are written in the same
transaction that completes it.

Recovery after a crash (`recover`): queued jobs stay queued; a job found running was
interrupted by the crash and is queued again, once. `attempts` counts the times a job
was started; a job found running after its `MAX_ATTEMPTS`-th start is marked failed
with that reason, so a job that crashes the server cannot make it crash forever.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from limner.errors import LimnerError
from limner.requests import GenerationRequest

__all__ = [
    "FINAL_STATUSES",
    "MAX_ATTEMPTS",
    "ImageRecord",
    "Job",
    "JobNotFoundError",
    "JobStateError",
    "JobStatus",
    "JobStore",
    "QueueFullError",
    "Recovery",
    "SqliteJobStore",
]

MAX_ATTEMPTS = 2  # a job interrupted by a crash runs again once, then is failed


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobNotFoundError(LimnerError):
    """No job (or image) with that id."""


class JobStateError(LimnerError):
    """The job is not in a state that allows the change (e.g. reprioritising a running job)."""


class QueueFullError(LimnerError):
    """Too many jobs are waiting; try again later."""


class ImageRecord(BaseModel):
    """One generated image in the gallery: a PNG under the job's output folder."""

    version: Literal[1] = 1
    id: str
    job_id: str
    index: int = Field(description="position among the job's images")
    file_name: str
    prompt: str
    seed: int
    width: int
    height: int
    created_at: float = Field(description="Unix time")
    infotext: str = Field(description="A1111 'parameters' text")


class Job(BaseModel):
    """A generation request in the queue, and what became of it."""

    version: Literal[1] = 1
    id: str
    status: JobStatus
    priority: int
    created_at: float = Field(description="Unix time")
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = Field(0, description="times the job was started")
    progress: float = Field(0.0, description="0..1")
    cancel_requested: bool = False
    error: str | None = None
    error_kind: str | None = Field(
        None, description="the error's class (InvalidRequestError, ...), 'crash' or 'internal'"
    )
    source: str = Field("native", description="the API that submitted it")
    request: GenerationRequest
    image_ids: list[str] = Field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class Recovery:
    """What `recover` did at start-up."""

    requeued: list[str]
    failed: list[str]
    cancelled: list[str]


class JobStore(ABC):
    """Jobs and the gallery. Every method is one transaction and safe from any thread."""

    @abstractmethod
    def submit(
        self,
        request: GenerationRequest,
        *,
        priority: int = 0,
        job_id: str | None = None,
        source: str = "native",
        max_queued: int | None = None,
    ) -> Job: ...

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def list_jobs(
        self, *, statuses: list[JobStatus] | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]: ...

    @abstractmethod
    def count(self, statuses: list[JobStatus] | None = None) -> int: ...

    @abstractmethod
    def claim_next(self) -> Job | None:
        """The queued job of highest priority (oldest first), now running; None if none."""

    @abstractmethod
    def set_progress(self, job_id: str, progress: float) -> None: ...

    @abstractmethod
    def is_cancel_requested(self, job_id: str) -> bool: ...

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; ask a running one to stop. Final jobs are left as they are."""

    @abstractmethod
    def set_priority(self, job_id: str, priority: int) -> Job: ...

    @abstractmethod
    def complete(self, job_id: str, images: list[ImageRecord]) -> Job: ...

    @abstractmethod
    def fail(self, job_id: str, error: str, kind: str) -> Job: ...

    @abstractmethod
    def mark_cancelled(self, job_id: str) -> Job: ...

    @abstractmethod
    def requeue(self, job_id: str) -> Job:
        """Put a running job back in the queue, as if never started (graceful shutdown)."""

    @abstractmethod
    def recover(self) -> Recovery: ...

    @abstractmethod
    def list_images(
        self,
        *,
        query: str | None = None,
        job_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ImageRecord]: ...

    @abstractmethod
    def count_images(self, *, query: str | None = None, job_id: str | None = None) -> int: ...

    @abstractmethod
    def job_requests(self, job_ids: list[str]) -> dict[str, GenerationRequest]:
        """The stored requests of these jobs, by id (unknown ids are left out)."""

    @abstractmethod
    def get_image(self, image_id: str) -> ImageRecord: ...

    @abstractmethod
    def delete_image(self, image_id: str) -> ImageRecord: ...

    @abstractmethod
    def get_setting(self, key: str) -> str | None: ...

    @abstractmethod
    def set_setting(self, key: str, value: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


# Each entry moves the schema from version i to i+1 (PRAGMA user_version).
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        priority INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
        request_json TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        error_kind TEXT,
        progress REAL NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'native'
    );
    CREATE INDEX jobs_queue ON jobs (status, priority DESC, created_at);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id),
        idx INTEGER NOT NULL,
        file_name TEXT NOT NULL,
        prompt TEXT NOT NULL,
        seed INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        created_at REAL NOT NULL,
        infotext TEXT NOT NULL
    );
    CREATE INDEX images_job ON images (job_id, idx);
    CREATE INDEX images_created ON images (created_at);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)

_JOB_COLUMNS = (
    "id, created_at, started_at, finished_at, priority, status, request_json, attempts, "
    "error, error_kind, progress, cancel_requested, source"
)
_IMAGE_COLUMNS = "id, job_id, idx, file_name, prompt, seed, width, height, created_at, infotext"


def new_id() -> str:
    return uuid.uuid4().hex


class SqliteJobStore(JobStore):
    """`JobStore` in one SQLite file (WAL). One connection, serialised by a lock: SQLite
    writes one transaction at a time anyway, and one connection keeps memory flat."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives the process being killed.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LimnerError(
                    f"the job database {self.path} was written by a newer limner "
                    f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade limner"
                )
            for target in range(version, SCHEMA_VERSION):
                with self._transaction() as conn:
                    for statement in _MIGRATIONS[target].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {target + 1}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), under the store's lock."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- jobs ---------------------------------------------------------------------------

    def _job(self, conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        images = conn.execute(
            "SELECT id FROM images WHERE job_id = ? ORDER BY idx", (job_id,)
        ).fetchall()
        return _job_from_row(row, [r["id"] for r in images])

    def submit(
        self,
        request: GenerationRequest,
        *,
        priority: int = 0,
        job_id: str | None = None,
        source: str = "native",
        max_queued: int | None = None,
    ) -> Job:
        job_id = job_id or new_id()
        with self._transaction() as conn:
            if max_queued is not None:
                queued = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'queued'"
                ).fetchone()[0]
                if queued >= max_queued:
                    raise QueueFullError(
                        f"{queued} jobs are already waiting (the limit is {max_queued}); "
                        "try again when some have finished"
                    )
            conn.execute(
                "INSERT INTO jobs (id, created_at, priority, status, request_json, source) "
                "VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, time.time(), priority, request.model_dump_json(exclude_none=True), source),
            )
            return self._job(conn, job_id)

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._job(self._conn, job_id)

    def list_jobs(
        self, *, statuses: list[JobStatus] | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        where, args = _status_filter(statuses)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs {where} "
                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            jobs = []
            for row in rows:
                images = self._conn.execute(
                    "SELECT id FROM images WHERE job_id = ? ORDER BY idx", (row["id"],)
                ).fetchall()
                jobs.append(_job_from_row(row, [r["id"] for r in images]))
            return jobs

    def count(self, statuses: list[JobStatus] | None = None) -> int:
        where, args = _status_filter(statuses)
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]

    def claim_next(self) -> Job | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' "
                "ORDER BY priority DESC, created_at, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, "
                "progress = 0 WHERE id = ? AND status = 'queued'",
                (time.time(), row["id"]),
            )
            return self._job(conn, row["id"])

    def set_progress(self, job_id: str, progress: float) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'",
                (min(max(progress, 0.0), 1.0), job_id),
            )

    def is_cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return bool(row and row[0])

    def cancel(self, job_id: str) -> Job:
        with self._transaction() as conn:
            job = self._job(conn, job_id)
            if job.status is JobStatus.QUEUED:
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, "
                    "finished_at = ? WHERE id = ? AND status = 'queued'",
                    (time.time(), job_id),
                )
            elif job.status is JobStatus.RUNNING:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'",
                    (job_id,),
                )
            return self._job(conn, job_id)

    def set_priority(self, job_id: str, priority: int) -> Job:
        with self._transaction() as conn:
            job = self._job(conn, job_id)
            if job.status is not JobStatus.QUEUED:
                raise JobStateError(
                    f"job {job_id} is {job.status.value}; only a queued job's priority can change"
                )
            conn.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, job_id))
            return self._job(conn, job_id)

    def _finish(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        kind: str | None = None,
        from_status: str = "running",
    ) -> bool:
        cursor = conn.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = ?, error_kind = ?, "
            "progress = CASE WHEN ? = 'completed' THEN 1 ELSE progress END "
            "WHERE id = ? AND status = ?",
            (status.value, time.time(), error, kind, status.value, job_id, from_status),
        )
        return cursor.rowcount == 1

    def complete(self, job_id: str, images: list[ImageRecord]) -> Job:
        with self._transaction() as conn:
            if not self._finish(conn, job_id, JobStatus.COMPLETED):
                raise JobStateError(f"job {job_id} is not running; it cannot complete")
            conn.executemany(
                f"INSERT INTO images ({_IMAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.id,
                        job_id,
                        r.index,
                        r.file_name,
                        r.prompt,
                        r.seed,
                        r.width,
                        r.height,
                        r.created_at,
                        r.infotext,
                    )
                    for r in images
                ],
            )
            return self._job(conn, job_id)

    def fail(self, job_id: str, error: str, kind: str) -> Job:
        with self._transaction() as conn:
            if not self._finish(conn, job_id, JobStatus.FAILED, error=error, kind=kind):
                raise JobStateError(f"job {job_id} is not running; it cannot fail")
            return self._job(conn, job_id)

    def mark_cancelled(self, job_id: str) -> Job:
        with self._transaction() as conn:
            if not self._finish(conn, job_id, JobStatus.CANCELLED):
                raise JobStateError(f"job {job_id} is not running")
            return self._job(conn, job_id)

    def requeue(self, job_id: str) -> Job:
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, progress = 0, "
                "attempts = MAX(attempts - 1, 0) WHERE id = ? AND status = 'running'",
                (job_id,),
            )
            if cursor.rowcount != 1:
                raise JobStateError(f"job {job_id} is not running")
            return self._job(conn, job_id)

    def recover(self) -> Recovery:
        requeued, failed, cancelled = [], [], []
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, attempts, cancel_requested FROM jobs WHERE status = 'running'"
            ).fetchall()
            for row in rows:
                if row["cancel_requested"]:
                    self._finish(conn, row["id"], JobStatus.CANCELLED)
                    cancelled.append(row["id"])
                elif row["attempts"] >= MAX_ATTEMPTS:
                    self._finish(
                        conn,
                        row["id"],
                        JobStatus.FAILED,
                        error=(
                            f"the server stopped while running this job, {row['attempts']} "
                            "times (crash, kill or power loss); it is not run again in case "
                            "the job itself makes the server crash"
                        ),
                        kind="crash",
                    )
                    failed.append(row["id"])
                else:
                    conn.execute(
                        "UPDATE jobs SET status = 'queued', progress = 0 WHERE id = ?",
                        (row["id"],),
                    )
                    requeued.append(row["id"])
        return Recovery(requeued, failed, cancelled)

    # -- gallery ------------------------------------------------------------------------

    def list_images(
        self,
        *,
        query: str | None = None,
        job_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ImageRecord]:
        where, args = _image_filter(query, job_id)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images {where} "
                "ORDER BY created_at DESC, job_id, idx LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_image_from_row(row) for row in rows]

    def count_images(self, *, query: str | None = None, job_id: str | None = None) -> int:
        where, args = _image_filter(query, job_id)
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM images {where}", args).fetchone()[0]

    def job_requests(self, job_ids: list[str]) -> dict[str, GenerationRequest]:
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, request_json FROM jobs WHERE id IN ({marks})", ids
            ).fetchall()
        return {
            row["id"]: GenerationRequest.model_validate_json(row["request_json"]) for row in rows
        }

    def get_image(self, image_id: str) -> ImageRecord:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)
            ).fetchone()
        if row is None:
            raise JobNotFoundError(f"no image with id {image_id!r}")
        return _image_from_row(row)

    def delete_image(self, image_id: str) -> ImageRecord:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)
            ).fetchone()
            if row is None:
                raise JobNotFoundError(f"no image with id {image_id!r}")
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            return _image_from_row(row)

    # -- settings -----------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _image_filter(query: str | None, job_id: str | None) -> tuple[str, tuple]:
    """WHERE clause of a gallery search: the prompt contains `query` (LIKE, escaped)."""
    clauses, args = [], []
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("prompt LIKE ? ESCAPE '\\'")
        args.append(f"%{escaped}%")
    if job_id:
        clauses.append("job_id = ?")
        args.append(job_id)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), tuple(args)


def _status_filter(statuses: list[JobStatus] | None) -> tuple[str, tuple]:
    if not statuses:
        return "", ()
    marks = ", ".join("?" for _ in statuses)
    return f"WHERE status IN ({marks})", tuple(JobStatus(s).value for s in statuses)


def _job_from_row(row: sqlite3.Row, image_ids: list[str]) -> Job:
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        priority=row["priority"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        progress=row["progress"],
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        error_kind=row["error_kind"],
        source=row["source"],
        request=GenerationRequest.model_validate_json(row["request_json"]),
        image_ids=image_ids,
    )


def _image_from_row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        job_id=row["job_id"],
        index=row["idx"],
        file_name=row["file_name"],
        prompt=row["prompt"],
        seed=row["seed"],
        width=row["width"],
        height=row["height"],
        created_at=row["created_at"],
        infotext=row["infotext"],
    )
