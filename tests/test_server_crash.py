"""Crash test: `kill -9` a `limner serve` with jobs queued and one running, twice.

After the first kill the interrupted job runs again and queued jobs run; after a second
kill during the same job's second run, that job is failed with the reason and never run
again. No job is lost or duplicated: every job ends completed (with exactly its images,
once, on disk and in the gallery) or failed with a reason.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from test_server_helpers import FINAL, subprocess_server

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SLOW = {"prompt": "slow", "model": "tiny-sd1", "steps": 40, "width": 64, "height": 64, "seed": 1}
FAST = {"prompt": "fast", "model": "tiny-sd1", "steps": 2, "width": 64, "height": 64}


def submit(url: str, request: dict, priority: int = 0) -> str:
    response = httpx.post(f"{url}/api/v1/jobs", json={"request": request, "priority": priority})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_running(url: str, job_id: str, attempts: int, timeout: float = 300) -> None:
    """Until the job runs its `attempts`-th time and has made a step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["attempts"] == attempts and job["progress"] > 0:
            return
        assert job["status"] not in FINAL, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start its attempt {attempts}")


def kill9(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def wait_all_final(url: str, ids: list[str], timeout: float = 600) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = {i: httpx.get(f"{url}/api/v1/jobs/{i}").json() for i in ids}
        if all(j["status"] in FINAL for j in jobs.values()):
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"jobs did not finish: {jobs}")


def test_kill_9_loses_and_duplicates_nothing(limner_home, tiny_sd1):
    with subprocess_server(limner_home) as (proc, url):
        slow = submit(url, SLOW, priority=1)
        fast = [submit(url, {**FAST, "seed": i, "batch_size": 2}) for i in range(3)]
        wait_running(url, slow, attempts=1)
        kill9(proc)

    # Restart: the interrupted job runs again (first: highest priority); kill it again.
    with subprocess_server(limner_home) as (proc, url):
        during = submit(url, {**FAST, "seed": 99})
        wait_running(url, slow, attempts=2)
        queued = httpx.get(f"{url}/api/v1/jobs", params={"status": "queued"}).json()
        assert {j["id"] for j in queued["jobs"]} == {*fast, during}
        kill9(proc)

    with subprocess_server(limner_home) as (proc, url):
        ids = [slow, *fast, during]
        jobs = wait_all_final(url, ids)
        listing = httpx.get(f"{url}/api/v1/jobs", params={"limit": 100}).json()
        gallery = httpx.get(f"{url}/api/v1/images", params={"limit": 500}).json()

    assert listing["total"] == len(ids)  # nothing lost, nothing added
    crashed = jobs[slow]
    assert crashed["status"] == "failed" and crashed["error_kind"] == "crash"
    assert "stopped while running this job, 2 times" in crashed["error"]
    assert crashed["attempts"] == 2 and crashed["image_ids"] == []
    for job_id in [*fast, during]:
        job = jobs[job_id]
        assert job["status"] == "completed" and job["attempts"] == 1, job
        expected = job["request"]["batch_size"] * job["request"]["batch_count"]
        assert len(job["image_ids"]) == expected
        files = sorted(p.name for p in (limner_home / "outputs" / "jobs" / job_id).iterdir())
        assert len(files) == expected  # one file per image, no copy of an earlier attempt
    all_image_ids = [i for j in jobs.values() for i in j["image_ids"]]
    assert len(set(all_image_ids)) == len(all_image_ids) == gallery["total"]
    assert not (limner_home / "outputs" / "jobs" / slow).exists()


def test_a_job_interrupted_once_completes_on_restart(limner_home, tiny_sd1):
    with subprocess_server(limner_home) as (proc, url):
        slow = submit(url, {**SLOW, "steps": 12})
        wait_running(url, slow, attempts=1)
        kill9(proc)
    with subprocess_server(limner_home) as (proc, url):
        [job] = wait_all_final(url, [slow]).values()
        assert job["status"] == "completed" and job["attempts"] == 2
        assert len(job["image_ids"]) == 1
        image = httpx.get(f"{url}/api/v1/images/{job['image_ids'][0]}").json()
        assert image["seed"] == 1
