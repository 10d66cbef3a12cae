"""The durable queue: SQLite store transitions, crash recovery, the gallery, inputs."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from limner.errors import InvalidRequestError
from limner.jobs import (
    MAX_ATTEMPTS,
    ImageRecord,
    InputStore,
    JobNotFoundError,
    JobStateError,
    JobStatus,
    QueueFullError,
    SqliteJobStore,
    new_id,
)
from limner.jobs.preview import latent_preview, preview_png_base64
from limner.requests import GenerationRequest


@pytest.fixture
def store(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def request(prompt: str = "a red apple", **fields) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, seed=1, **fields)


def image(job_id: str, index: int, prompt: str = "a red apple") -> ImageRecord:
    return ImageRecord(
        id=new_id(),
        job_id=job_id,
        index=index,
        file_name=f"{index}.png",
        prompt=prompt,
        seed=1 + index,
        width=64,
        height=64,
        created_at=1.0 + index,
        infotext="x",
    )


def test_database_is_wal(store):
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_claim_order_is_priority_then_age(store):
    a = store.submit(request("a"))
    b = store.submit(request("b"), priority=5)
    c = store.submit(request("c"), priority=5)
    order = [store.claim_next().id for _ in range(3)]
    assert order == [b.id, c.id, a.id]
    assert store.claim_next() is None
    assert store.get(b.id).attempts == 1 and store.get(b.id).status is JobStatus.RUNNING


def test_complete_writes_images_in_the_same_transaction(store):
    job = store.submit(request())
    store.claim_next()
    records = [image(job.id, 0), image(job.id, 1)]
    done = store.complete(job.id, records)
    assert done.status is JobStatus.COMPLETED and done.progress == 1.0
    assert done.image_ids == [r.id for r in records]
    with pytest.raises(JobStateError):
        store.complete(job.id, [image(job.id, 2)])  # never twice
    assert store.count_images() == 2


def test_every_job_reaches_one_final_state(store):
    job = store.submit(request())
    store.claim_next()
    store.fail(job.id, "boom", "InvalidRequestError")
    for change in (
        lambda: store.complete(job.id, []),
        lambda: store.mark_cancelled(job.id),
        lambda: store.fail(job.id, "again", "x"),
        lambda: store.requeue(job.id),
    ):
        with pytest.raises(JobStateError):
            change()
    assert store.get(job.id).status is JobStatus.FAILED
    assert store.get(job.id).error == "boom"


def test_cancel_queued_now_running_by_flag(store):
    queued = store.submit(request())
    running = store.submit(request(), priority=1)
    store.claim_next()
    assert store.cancel(queued.id).status is JobStatus.CANCELLED
    flagged = store.cancel(running.id)
    assert flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert store.is_cancel_requested(running.id)
    assert store.mark_cancelled(running.id).status is JobStatus.CANCELLED
    assert store.claim_next() is None  # the cancelled queued job is never run


def test_priority_only_while_queued(store):
    job = store.submit(request())
    assert store.set_priority(job.id, 3).priority == 3
    store.claim_next()
    with pytest.raises(JobStateError):
        store.set_priority(job.id, 4)
    with pytest.raises(JobNotFoundError):
        store.get("0" * 32)


def test_queue_bound(store):
    store.submit(request(), max_queued=2)
    store.submit(request(), max_queued=2)
    with pytest.raises(QueueFullError, match="limit is 2"):
        store.submit(request(), max_queued=2)


def test_recovery_requeues_an_interrupted_job_once_then_fails_it(tmp_path):
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path)
    job = store.submit(request())
    waiting = store.submit(request())
    assert store.claim_next().id == job.id
    store._conn.close()  # the process dies: nothing else is written

    for attempt in range(1, MAX_ATTEMPTS):
        store = SqliteJobStore(path)
        recovery = store.recover()
        assert recovery.requeued == [job.id] and not recovery.failed
        assert store.get(waiting.id).status is JobStatus.QUEUED  # queued jobs stay queued
        assert store.claim_next().id == job.id  # the interrupted one runs again first
        assert store.get(job.id).attempts == attempt + 1
        store._conn.close()  # and the server dies again

    store = SqliteJobStore(path)
    recovery = store.recover()
    assert recovery.failed == [job.id] and not recovery.requeued
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error_kind == "crash"
    assert "stopped while running this job" in failed.error
    assert store.get(waiting.id).status is JobStatus.QUEUED
    store.close()


def test_recovery_finishes_a_cancel_that_was_asked_for(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    job = store.submit(request())
    store.claim_next()
    store.cancel(job.id)
    recovery = store.recover()
    assert recovery.cancelled == [job.id]
    assert store.get(job.id).status is JobStatus.CANCELLED
    store.close()


def test_graceful_requeue_does_not_count_as_an_attempt(store):
    job = store.submit(request())
    store.claim_next()
    back = store.requeue(job.id)
    assert back.status is JobStatus.QUEUED and back.attempts == 0


def test_gallery_search_escapes_like_patterns(store):
    job = store.submit(request())
    store.claim_next()
    store.complete(
        job.id,
        [image(job.id, 0, "100% cotton"), image(job.id, 1, "a_b"), image(job.id, 2, "plain")],
    )
    assert [r.prompt for r in store.list_images(query="%")] == ["100% cotton"]
    assert [r.prompt for r in store.list_images(query="_")] == ["a_b"]
    assert store.count_images(query="COTTON") == 1
    assert store.count_images() == 3
    newest_first = [r.index for r in store.list_images()]
    assert newest_first == [2, 1, 0]
    deleted = store.delete_image(store.list_images(query="plain")[0].id)
    assert deleted.prompt == "plain" and store.count_images() == 2
    with pytest.raises(JobNotFoundError):
        store.get_image(deleted.id)
    assert store.job_requests([job.id, "f" * 32])[job.id].prompt == "a red apple"


def test_settings_round_trip(store):
    assert store.get_setting("x") is None
    store.set_setting("x", "1")
    store.set_setting("x", "2")
    assert store.get_setting("x") == "2"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "jobs.db"
    SqliteJobStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(Exception, match="newer limner"):
        SqliteJobStore(path)


def test_concurrent_claims_never_give_one_job_twice(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    for _ in range(40):
        store.submit(request())
    claimed: list[str] = []
    lock = threading.Lock()

    def claim():
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40
    store.close()


def test_input_store_is_content_addressed_and_resolves(tmp_path):
    inputs = InputStore(tmp_path / "uploads")
    ref = inputs.put(b"\x89PNG fake")
    assert ref == inputs.put(b"\x89PNG fake") and ref.startswith("upload:")
    req = GenerationRequest(mode="img2img", init_image=ref, prompt="x")
    resolved = inputs.resolve(req)
    assert resolved.init_image == str(tmp_path / "uploads" / ref.removeprefix("upload:"))
    for bad in ("upload:../../etc/passwd", "upload:" + "0" * 64, "/etc/passwd"):
        with pytest.raises(InvalidRequestError):
            inputs.path_of(bad)


def test_preview_is_small_rgb():
    import numpy as np

    latents = np.random.default_rng(0).standard_normal((2, 4, 8, 12)).astype(np.float32)
    img = latent_preview(latents, 64)
    assert img.mode == "RGB" and img.size == (64, 43)
    odd = latent_preview(np.zeros((1, 3, 8, 8), dtype=np.float32), 32)
    assert odd.size == (32, 32)
    assert preview_png_base64(latents).startswith("iVBOR")
