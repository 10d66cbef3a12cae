"""The native API (/api/v1) against a real uvicorn server: jobs, events, gallery, models."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from PIL import Image

from limner.pngmeta import read_png_metadata
from test_server_helpers import b64_png, live_server, make_image, make_mask, wait_final

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def server(limner_home, tiny_sd1):
    with live_server(limner_home) as srv:
        yield srv


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def submit(client: httpx.Client, priority: int = 0, **request) -> dict:
    body = {"request": {"prompt": "a red apple", "model": "tiny-sd1", "steps": 2, **request}}
    response = client.post("/api/v1/jobs", json={**body, "priority": priority})
    assert response.status_code == 201, response.text
    return response.json()


def test_health_models_samplers(client):
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["version"]
    models = client.get("/api/v1/models").json()
    names = [m["name"] for m in models["models"]]
    assert names[0] == "builtin" and "tiny-sd1" in names
    assert models["default"] == "builtin"
    tiny = next(m for m in models["models"] if m["name"] == "tiny-sd1")
    assert len(tiny["short_hash"]) == 10 and tiny["size_bytes"] > 0
    samplers = client.get("/api/v1/samplers").json()
    assert "DPM++ 2M" in samplers["samplers"] and "Euler a" in samplers["samplers"]
    assert samplers["schedules"] == ["Automatic", "Karras", "Exponential"]
    schema = client.get("/openapi.json").json()
    assert "/api/v1/jobs" in schema["paths"]


def test_txt2img_job_to_gallery_and_file(client):
    job = submit(client, seed=5, batch_size=2, width=64, height=64)
    assert job["status"] == "queued" and job["request"]["seed"] == 5
    done = wait_final(client, job["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 1.0 and done["attempts"] == 1 and len(done["image_ids"]) == 2
    image = client.get(f"/api/v1/images/{done['image_ids'][1]}").json()
    assert image["seed"] == 6 and image["job_id"] == job["id"] and image["index"] == 1
    assert image["request"]["seed"] == 6 and image["request"]["batch_size"] == 1
    assert "Seed: 6" in image["infotext"]
    file = client.get(image["url"])
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    png = Image.open(__import__("io").BytesIO(file.content))
    assert png.size == (64, 64) and "Seed: 6" in png.text["parameters"]


def test_seed_is_resolved_when_random(client):
    job = submit(client, seed=-1)
    assert isinstance(job["request"]["seed"], int) and job["request"]["seed"] >= 0


def test_guidance_is_accepted_as_the_studio_names_it(client):
    job = submit(client, guidance=3.5)
    assert job["request"]["guidance_scale"] == 3.5


def test_reusing_an_images_request_reproduces_it(client):
    first = wait_final(client, submit(client, seed=9, width=64, height=64)["id"])
    image = client.get(f"/api/v1/images/{first['image_ids'][0]}").json()
    again = wait_final(client, submit(client, **image["request"])["id"])
    original = client.get(image["url"]).content
    remade = client.get(f"/api/v1/images/{again['image_ids'][0]}/file").content
    assert (
        Image.open(__import__("io").BytesIO(original)).tobytes()
        == Image.open(__import__("io").BytesIO(remade)).tobytes()
    )


def test_img2img_and_inpaint_from_base64_and_gallery(client):
    init = b64_png(make_image(64))
    job = wait_final(client, submit(client, mode="img2img", init_image=init, strength=0.5)["id"])
    assert job["status"] == "completed", job
    stored = job["request"]["init_image"]
    assert stored.startswith("upload:") and len(stored) == len("upload:") + 64
    gallery_id = job["image_ids"][0]
    mask = "data:image/png;base64," + b64_png(make_mask(64))
    inpaint = submit(client, mode="inpaint", init_image=f"image:{gallery_id}", mask=mask)
    done = wait_final(client, inpaint["id"])
    assert done["status"] == "completed", done
    # The stored request can be sent back as it is: its images are upload references.
    again = wait_final(client, submit(client, **done["request"])["id"])
    assert again["status"] == "completed"


def test_outpaint(client):
    init = b64_png(make_image(64))
    job = wait_final(
        client, submit(client, mode="outpaint", init_image=init, outpaint={"left": 16})["id"]
    )
    assert job["status"] == "completed", job
    image = client.get(f"/api/v1/images/{job['image_ids'][0]}").json()
    assert (image["width"], image["height"]) == (80, 64)


def test_priority_and_cancel_of_queued_jobs(client):
    blocker = submit(client, steps=60, width=64, height=64)
    low = submit(client, priority=0)
    high = submit(client, priority=0)
    changed = client.post(f"/api/v1/jobs/{high['id']}/priority", json={"priority": 5}).json()
    assert changed["priority"] == 5
    cancelled = client.post(f"/api/v1/jobs/{low['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    client.post(f"/api/v1/jobs/{blocker['id']}/cancel")
    assert wait_final(client, blocker["id"])["status"] in ("cancelled", "completed")
    assert wait_final(client, high["id"])["status"] == "completed"
    again = client.post(f"/api/v1/jobs/{low['id']}/cancel").json()
    assert again["status"] == "cancelled"  # a final job stays as it is
    refused = client.post(f"/api/v1/jobs/{high['id']}/priority", json={"priority": 1})
    assert refused.status_code == 409
    assert "only a queued job" in refused.json()["error"]["message"]


def test_cancel_a_running_job(client):
    job = submit(client, steps=150, batch_count=4, width=64, height=64)
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.post(f"/api/v1/jobs/{job['id']}/cancel")
    done = wait_final(client, job["id"])
    assert done["status"] == "cancelled" and done["image_ids"] == []


def test_list_jobs_filters_and_pages(client):
    ids = [submit(client)["id"] for _ in range(3)]
    for job_id in ids:
        wait_final(client, job_id)
    page = client.get("/api/v1/jobs", params={"status": "completed", "limit": 2}).json()
    assert page["total"] == 3 and len(page["jobs"]) == 2
    assert page["jobs"][0]["id"] == ids[-1]  # newest first
    bad = client.get("/api/v1/jobs", params={"status": "done"})
    assert bad.status_code == 422 and "status" in bad.json()["error"]["message"]


def test_gallery_search_and_delete(client, limner_home):
    a = wait_final(client, submit(client, prompt="a blue harbour")["id"])
    wait_final(client, submit(client, prompt="a red door")["id"])
    found = client.get("/api/v1/images", params={"q": "HARBOUR"}).json()
    assert found["total"] == 1 and found["images"][0]["prompt"] == "a blue harbour"
    assert client.get("/api/v1/images", params={"q": "%"}).json()["total"] == 0
    image_id = a["image_ids"][0]
    files = list((limner_home / "outputs" / "jobs" / a["id"]).glob("*.png"))
    assert len(files) == 1
    assert client.delete(f"/api/v1/images/{image_id}").status_code == 204
    assert not files[0].exists()
    assert client.get(f"/api/v1/images/{image_id}").status_code == 404
    assert client.get("/api/v1/images").json()["total"] == 1


def test_events_stream_progress_and_final_status(client):
    job = submit(client, steps=6, width=64, height=64)
    events = []
    with client.stream("GET", "/api/v1/events", params={"job_id": job["id"]}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["type"] == "status" and events[-1]["final"]
    assert events[-1]["status"] == "completed" and events[-1]["image_ids"]
    progress = [e for e in events if e["type"] == "progress"]
    if progress:  # the job may have finished before the stream opened
        last = progress[-1]
        assert last["total"] >= last["step"] >= 1 and 0 < last["progress"] <= 1
        assert last["eta_s"] >= 0
        preview = Image.open(
            __import__("io").BytesIO(__import__("base64").b64decode(last["preview"]))
        )
        assert max(preview.size) <= 64


def test_events_of_all_jobs_include_progress_with_preview(client):
    events = []
    with client.stream("GET", "/api/v1/events") as stream:
        job = submit(client, steps=8, width=64, height=64)
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                events.append(event)
                if event.get("job_id") == job["id"] and event.get("final"):
                    break
    kinds = [e["type"] for e in events if e["job_id"] == job["id"]]
    assert kinds[0] == "status" and "progress" in kinds and kinds[-1] == "status"
    progress = next(e for e in events if e["type"] == "progress")
    assert progress["preview"] and progress["total"] == 8


def test_failed_job_has_reason(client):
    # A mask of another size than the image is found by the engine, when the job runs.
    job = submit(
        client, mode="inpaint", init_image=b64_png(make_image(64)), mask=b64_png(make_mask(72))
    )
    done = wait_final(client, job["id"])
    assert done["status"] == "failed" and done["error_kind"] == "InvalidRequestError"
    assert "the same size" in done["error"]


def test_unknown_sampler_is_refused_at_submit(client):
    response = client.post(
        "/api/v1/jobs", json={"request": {"prompt": "x", "model": "tiny-sd1", "sampler": "Nope"}}
    )
    assert response.status_code == 422
    assert "sampler" in response.json()["error"]["message"].lower()


def test_png_from_gallery_carries_the_request(client, tmp_path):
    done = wait_final(client, submit(client, seed=3)["id"])
    path = tmp_path / "x.png"
    path.write_bytes(client.get(f"/api/v1/images/{done['image_ids'][0]}/file").content)
    meta = read_png_metadata(path)
    assert meta.request["request"]["seed"] == 3 and meta.request["request"]["model"] == "tiny-sd1"
