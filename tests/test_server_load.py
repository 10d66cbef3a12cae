"""Load test: 16 concurrent clients submit, poll and cancel against a real `limner serve`
on loopback. Every job ends in exactly one final state, no answer is a 5xx, and the
server's memory (RSS) stays flat.

The suite runs a short version (20 s); the full 2-minute run is marked slow:
``.venv/bin/pytest -q -m slow tests/test_server_load.py``.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from test_server_helpers import FINAL, subprocess_server

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

CLIENTS = 16
REQUEST = {"prompt": "load", "model": "tiny-sd1", "steps": 1, "width": 64, "height": 64}


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    server_errors: list = field(default_factory=list)
    transport_errors: list = field(default_factory=list)
    jobs: set = field(default_factory=set)

    def record(self, response: httpx.Response) -> httpx.Response:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append((response.request.url.path, response.text[:200]))
        return response


def client_loop(url: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    mine: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            try:
                action = rng.random()
                if action < 0.45 or not mine:
                    request = {
                        **REQUEST,
                        "seed": rng.randrange(1000),
                        "batch_size": rng.choice([1, 2]),
                    }
                    r = tally.record(
                        http.post(
                            "/api/v1/jobs",
                            json={"request": request, "priority": rng.randrange(-2, 3)},
                        )
                    )
                    if r.status_code == 201:
                        mine.append(r.json()["id"])
                        with tally.lock:
                            tally.jobs.add(mine[-1])
                elif action < 0.65:
                    tally.record(http.post(f"/api/v1/jobs/{rng.choice(mine)}/cancel"))
                elif action < 0.85:
                    tally.record(http.get(f"/api/v1/jobs/{rng.choice(mine)}"))
                elif action < 0.93:
                    tally.record(
                        http.get("/api/v1/jobs", params={"status": "queued,running", "limit": 20})
                    )
                else:
                    tally.record(http.get("/api/v1/images", params={"q": "load", "limit": 10}))
            except httpx.HTTPError as err:
                with tally.lock:
                    tally.transport_errors.append(repr(err))
            time.sleep(rng.uniform(0.0, 0.05))


def run_load(home, duration: float) -> dict:
    with subprocess_server(home, "--max-queued", "400") as (proc, url):
        server = psutil.Process(proc.pid)
        with httpx.Client(base_url=url, timeout=60) as http:  # warm-up: the model loads
            warm = http.post("/api/v1/jobs", json={"request": REQUEST}).json()["id"]
            while http.get(f"/api/v1/jobs/{warm}").json()["status"] not in FINAL:
                time.sleep(0.2)
        tally = Tally()
        tally.jobs.add(warm)
        deadline = time.monotonic() + duration
        threads = [
            threading.Thread(target=client_loop, args=(url, i, deadline, tally))
            for i in range(CLIENTS)
        ]
        rss: list[tuple[float, int]] = []
        start = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rss.append((time.monotonic() - start, server.memory_info().rss))
            time.sleep(0.5)
        for t in threads:
            t.join()
        # Stop what is still waiting, then let the running job end.
        with httpx.Client(base_url=url, timeout=60) as http:
            for job_id in list(tally.jobs):
                tally.record(http.post(f"/api/v1/jobs/{job_id}/cancel"))
            deadline = time.monotonic() + 300
            while True:
                jobs = [tally.record(http.get(f"/api/v1/jobs/{i}")).json() for i in tally.jobs]
                if all(j["status"] in FINAL for j in jobs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            listing = http.get("/api/v1/jobs", params={"limit": 1}).json()
            gallery = http.get("/api/v1/images", params={"limit": 1}).json()
        return {
            "tally": tally,
            "jobs": jobs,
            "listed_total": listing["total"],
            "gallery_total": gallery["total"],
            "rss": rss,
            "home": home,
        }


def check(result: dict) -> dict:
    tally: Tally = result["tally"]
    jobs = result["jobs"]
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.transport_errors, tally.transport_errors[:5]
    assert tally.statuses[201] >= CLIENTS  # every client got work in
    assert result["listed_total"] == len(jobs)  # the store holds exactly the jobs made
    finals = Counter(j["status"] for j in jobs)
    assert set(finals) <= FINAL, finals
    images = 0
    for job in jobs:
        expected = job["request"]["batch_size"] * job["request"]["batch_count"]
        if job["status"] == "completed":
            assert len(job["image_ids"]) == expected and job["progress"] == 1.0
            folder = result["home"] / "outputs" / "jobs" / job["id"]
            assert len(list(folder.glob("*.png"))) == expected
        else:
            assert job["image_ids"] == [] and job["finished_at"] is not None
        images += len(job["image_ids"])
    assert images == result["gallery_total"]
    assert finals["completed"] > 0 and finals["cancelled"] > 0
    # Memory flat: the last third of the run against the first (the model was loaded
    # by the warm-up job before the clients started).
    samples = [m for _, m in result["rss"]]
    third = len(samples) // 3
    first = statistics.median(samples[:third])
    last = statistics.median(samples[2 * third :])
    growth = (last - first) / 2**20
    assert growth < 40, f"RSS grew by {growth:.1f} MiB"
    return {
        "finals": finals,
        "growth_mib": growth,
        "statuses": tally.statuses,
        "rss_mib": last / 2**20,
    }


def test_load_short(limner_home, tiny_sd1):
    summary = check(run_load(limner_home, duration=20))
    print(summary)


@pytest.mark.slow
def test_load_two_minutes(limner_home, tiny_sd1):
    summary = check(run_load(limner_home, duration=120))
    print(summary)
