"""The web studio in a real browser: Debian's headless Chromium driven by Playwright,
against a real `limner serve` app (uvicorn in a thread, on a free loopback port) whose
home has the tiny SD 1.x model registered.

Each test works the page as a person would (typing, clicking, painting with the mouse,
the keyboard alone) and checks both what the page shows and what the server stored.
"""

from __future__ import annotations

import base64
import io
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from PIL import Image
from playwright import sync_api as playwright_sync

from limner.server.app import create_app
from limner.server.settings import Limits, ServerSettings

CHROMIUM = Path("/usr/bin/chromium")  # Debian's, from scripts/install-system-deps
TIMEOUT_MS = 180_000  # tiny-model jobs take seconds; the 2-core test machine is often busy
FORM_CONTROLS = (
    "prompt negative_prompt model sampler schedule steps width height guidance_scale seed "
    "seed-random seed-reuse batch_size batch_count generate"
).split()


# -- the server -----------------------------------------------------------------------------


@contextmanager
def running_server(home: Path, **settings) -> Iterator[str]:
    """The real app on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(ServerSettings(port=port, home=home, **settings))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the limner server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def server(limner_home: Path, tiny_sd1: str) -> Iterator[str]:
    with running_server(limner_home) as url:
        yield url


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps", pytrace=False)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@contextmanager
def studio_page(
    browser, base_url: str, *, width: int = 1280, height: int = 900, wait_ready: bool = True
):
    """A fresh page on the studio, ready (models and gallery loaded); fails the test on
    any uncaught script error."""
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=base_url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    script_errors: list[str] = []
    page.on("pageerror", lambda err: script_errors.append(str(err)))
    page.goto(base_url + "/")
    if wait_ready:
        page.wait_for_selector("body[data-ready=true]")
    try:
        yield page
    finally:
        context.close()  # before the server stops: the page holds an event stream open
    assert script_errors == []


@pytest.fixture
def page(browser, server: str):
    with studio_page(browser, server) as page:
        yield page


def api_get(page, path: str) -> dict:
    response = page.request.get(path)
    assert response.ok, response.text()
    return response.json()


def wait_for_job_status(page, job_id: str, status: str, timeout_ms: float = TIMEOUT_MS) -> None:
    """Wait until the page lists job `job_id` with `status`. If it never does, fail with
    what the server says of the job and where its worker threads are (a rare CI hang)."""
    try:
        page.wait_for_selector(
            f'li.job[data-job-id="{job_id}"][data-status="{status}"]', timeout=timeout_ms
        )
    except playwright_sync.TimeoutError:
        response = page.request.get(f"/api/v1/jobs/{job_id}")
        frames = sys._current_frames()
        stacks = [
            f"thread {t.name}:\n" + "".join(traceback.format_stack(frames[t.ident]))
            for t in threading.enumerate()
            if t.ident in frames and t.name.startswith("limner-worker")
        ]
        raise AssertionError(
            f"job {job_id} not shown {status!r} in {timeout_ms / 1000:.1f} s; the server "
            f"says {response.status} {response.text()}\n" + "\n".join(stacks)
        ) from None


def submit_and_wait(page, click) -> dict:
    """Run `click` (which submits the form); wait until the page shows the job completed.
    Returns the job as the POST answered it."""
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/jobs") and r.request.method == "POST"
    ) as answer:
        click()
    assert answer.value.status == 201, answer.value.text()
    job = answer.value.json()
    wait_for_job_status(page, job["id"], "completed")
    return job


def fill_txt2img(page, prompt: str, *, steps: int = 3, seed: int | None = None) -> None:
    page.select_option("#model", "tiny-sd1")
    page.fill("#prompt", prompt)
    page.fill("#steps", str(steps))
    if seed is not None:
        page.fill("#seed", str(seed))


def generate(page, prompt: str, **kwargs) -> dict:
    fill_txt2img(page, prompt, **kwargs)
    return submit_and_wait(page, lambda: page.click("#generate"))


def intercepted_job_request(page, action) -> dict:
    """The GenerationRequest the page posts when `action` runs, stopped before it reaches
    the server (no job is queued; the page shows the refusal)."""
    bodies: list[dict] = []

    def refuse(route) -> None:
        bodies.append(route.request.post_data_json["request"])
        route.fulfill(status=503, json={"detail": "intercepted by the test"})

    page.route("**/api/v1/jobs", refuse)
    try:
        action()
        page.wait_for_selector("#error-text:text('intercepted by the test')")
    finally:
        page.unroute("**/api/v1/jobs")
    page.click("#error-dismiss")
    assert len(bodies) == 1
    return bodies[0]


def on_screen_box(page, selector: str) -> dict:
    """The element's box in the viewport, scrolled into view first (the mouse only
    reaches what is on screen)."""
    page.locator(selector).scroll_into_view_if_needed()
    return page.locator(selector).bounding_box()


def decode_data_url(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    assert header == "data:image/png;base64", header
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def make_png(path: Path, size: int = 64) -> Path:
    image = Image.new("RGB", (size, size))
    for x in range(size):
        for y in range(size):
            image.putpixel((x, y), (4 * x % 256, 4 * y % 256, 128))
    image.save(path)
    return path


# -- tests ----------------------------------------------------------------------------------


def test_generate_shows_progress_and_the_image_in_the_gallery(page):
    job = generate(page, "a red apple on a blue table", steps=4)

    row = page.locator(f'li.job[data-job-id="{job["id"]}"]')
    # Progress events reached the page: the bar, the step line and a live preview.
    assert int(row.get_attribute("data-progress-events")) >= 1
    assert row.locator(".job-progress").evaluate("e => e.value") == 1
    assert row.locator(".job-preview").get_attribute("src").startswith("data:image/png;base64,")
    assert row.locator(".job-status").text_content() == "Done"
    assert row.locator(".job-cancel").is_hidden()

    stored = api_get(page, f"/api/v1/jobs/{job['id']}")
    assert stored["status"] == "completed" and len(stored["image_ids"]) == 1
    image_id = stored["image_ids"][0]

    # The new image is the gallery's newest, and the viewer shows it, decoded.
    page.wait_for_selector(f'#gallery-grid li[data-image-id="{image_id}"]')
    assert page.locator("#gallery-grid li").count() == 1
    assert page.text_content("#gallery-count") == "1 image"
    viewer = page.locator("#viewer-image")
    page.wait_for_function(
        "() => { const i = document.getElementById('viewer-image');"
        " return i.complete && i.naturalWidth > 0 && !i.classList.contains('previewing'); }"
    )
    assert viewer.get_attribute("data-image-id") == image_id
    assert viewer.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
    record = api_get(page, f"/api/v1/images/{image_id}")
    assert page.text_content("#viewer-caption") == f"Seed {record['seed']} · 64 × 64"
    assert "a red apple on a blue table" in page.text_content("#viewer-infotext")
    assert f"Seed: {record['seed']}" in page.text_content("#viewer-infotext")


def test_a_late_answer_never_takes_a_finished_job_back(page):
    # On a busy machine the job's own events (running, completed) can reach the page before
    # the answer to its POST, which still says "queued" (a CI failure: the row went back to
    # queued for good). Hold the answer until the page has shown the job done.
    held = []

    def hold_the_answer(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        held.append((route, route.fetch()))

    page.route("**/api/v1/jobs", hold_the_answer)
    fill_txt2img(page, "a late answer", seed=5)
    page.click("#generate")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the page posted no job"
    route, response = held[0]
    job = response.json()
    assert job["status"] == "queued"
    wait_for_job_status(page, job["id"], "completed")  # learnt from the event stream
    route.fulfill(response=response)
    page.wait_for_function("() => !document.getElementById('generate').disabled")
    row = page.locator(f'li.job[data-job-id="{job["id"]}"]')
    assert row.get_attribute("data-status") == "completed"
    assert row.locator(".job-status").text_content() == "Done"
    # and the viewer shows the new image, as for any job of ours
    [image_id] = api_get(page, f"/api/v1/jobs/{job['id']}")["image_ids"]
    page.wait_for_selector(f'#viewer-image[data-image-id="{image_id}"]')
    page.unroute("**/api/v1/jobs")


def test_use_these_parameters_again_fills_the_form(page):
    generate(page, "a lighthouse at night", steps=4, seed=-1)
    image = api_get(page, "/api/v1/images")["images"][0]
    assert image["seed"] >= 0  # "random" became a concrete seed

    # The user moves on: other prompt, other settings.
    page.fill("#prompt", "something else entirely")
    page.fill("#steps", "20")
    page.fill("#seed", "-1")
    page.select_option("#sampler", "Euler")

    # Pick the image from the gallery, then reuse its parameters.
    page.click(f'#gallery-grid li[data-image-id="{image["id"]}"] button')
    page.click("#use-params")
    assert page.input_value("#prompt") == "a lighthouse at night"
    assert page.input_value("#seed") == str(image["seed"])
    assert page.input_value("#steps") == "4"
    assert page.input_value("#sampler") == image["request"]["sampler"]
    assert page.input_value("#model") == "tiny-sd1"
    assert page.evaluate("document.activeElement.id") == "prompt"

    # "Random" and "Reuse" on the seed alone.
    page.click("#seed-random")
    assert page.input_value("#seed") == "-1"
    page.click("#seed-reuse")
    assert page.input_value("#seed") == str(image["seed"])

    # Generating again from the reused parameters makes the same picture.
    again = submit_and_wait(page, lambda: page.click("#generate"))
    again_job = api_get(page, f"/api/v1/jobs/{again['id']}")
    assert again_job["request"]["seed"] == image["seed"]
    first = page.request.get(image["url"]).body()
    second = page.request.get(f"/api/v1/images/{again_job['image_ids'][0]}/file").body()
    pixels = [Image.open(io.BytesIO(b)).convert("RGB").tobytes() for b in (first, second)]
    assert pixels[0] == pixels[1]


def test_paint_a_mask_and_inpaint_a_gallery_image(page):
    generate(page, "a house with a door", seed=11)
    source = api_get(page, "/api/v1/images")["images"][0]

    page.click("#use-input")  # from the viewer: the image just made
    page.wait_for_selector("#init-source:text('Input: gallery image')")
    assert page.is_checked('input[name="mode"][value="img2img"]')
    page.check('input[name="mode"][value="inpaint"]')
    assert page.is_visible("#stage-mask")
    assert page.text_content("#init-source").startswith("Input: gallery image")

    # Refused before any request while the mask is empty.
    page.click("#generate")
    assert "Paint the area to repaint" in page.text_content("#error-text")

    # A vertical stroke near the left edge, with an 8 px brush.
    page.fill("#brush-size", "8")
    box = on_screen_box(page, "#stage-mask")
    assert box["width"] > 64  # the 64 px image is shown enlarged to paint on
    x = box["x"] + box["width"] * 0.1
    page.mouse.move(x, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.8, steps=8)
    page.mouse.up()

    with page.expect_request(lambda r: r.url.endswith("/api/v1/jobs")) as sent:
        job = submit_and_wait(page, lambda: page.click("#generate"))
    request = sent.value.post_data_json["request"]
    assert request["mode"] == "inpaint"
    assert request["init_image"] == f"image:{source['id']}"
    mask = decode_data_url(request["mask"]).convert("L")
    assert mask.size == (64, 64)
    assert mask.getpixel((6, 32)) == 255  # painted: repaint
    assert mask.getpixel((6, 4)) == 0  # above the stroke
    assert mask.getpixel((50, 32)) == 0  # far right: keep

    stored = api_get(page, f"/api/v1/jobs/{job['id']}")
    assert stored["request"]["mode"] == "inpaint"
    new_image = api_get(page, f"/api/v1/images/{stored['image_ids'][0]}")
    assert new_image["request"]["mode"] == "inpaint"
    page.wait_for_selector(f'#gallery-grid li[data-image-id="{new_image["id"]}"]')
    assert page.locator("#gallery-grid li").count() == 2


def test_eraser_clear_fill_and_invert_change_the_mask(page, tmp_path: Path):
    page.check('input[name="mode"][value="inpaint"]')
    page.set_input_files("#init-file", str(make_png(tmp_path / "in.png")))
    page.wait_for_selector("#stage:not([hidden])")

    def mask_pixels() -> Image.Image:
        request = intercepted_job_request(page, lambda: page.click("#generate"))
        return decode_data_url(request["mask"]).convert("L")

    page.click("#mask-fill")
    page.check('input[name="mask-tool"][value="eraser"]')
    page.fill("#brush-size", "16")
    box = on_screen_box(page, "#stage-mask")
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    filled_then_erased = mask_pixels()
    assert filled_then_erased.getpixel((32, 32)) == 0
    assert filled_then_erased.getpixel((2, 2)) == 255

    page.click("#mask-invert")
    inverted = mask_pixels()
    assert inverted.getpixel((32, 32)) == 255
    assert inverted.getpixel((2, 2)) == 0

    page.click("#mask-clear")
    page.click("#generate")
    assert "Paint the area to repaint" in page.text_content("#error-text")


def test_img2img_from_an_uploaded_file(page, tmp_path: Path):
    page.check('input[name="mode"][value="img2img"]')
    page.click("#generate")
    assert "Choose an input image first" in page.text_content("#error-text")

    page.set_input_files("#init-file", str(make_png(tmp_path / "upload.png", size=72)))
    page.wait_for_function("document.getElementById('init-source').textContent.includes('72')")
    assert page.input_value("#width") == "72" and page.input_value("#height") == "72"
    fill_txt2img(page, "a watercolour of the same")
    page.fill("#strength", "0.6")
    assert page.text_content("#strength-value") == "0.60"
    with page.expect_request(lambda r: r.url.endswith("/api/v1/jobs")) as sent:
        job = submit_and_wait(page, lambda: page.click("#generate"))
    request = sent.value.post_data_json["request"]
    assert request["init_image"].startswith("data:image/png;base64,")
    assert request["strength"] == 0.6
    stored = api_get(page, f"/api/v1/jobs/{job['id']}")
    assert stored["request"]["mode"] == "img2img"
    image = api_get(page, f"/api/v1/images/{stored['image_ids'][0]}")
    assert (image["width"], image["height"]) == (72, 72)


def test_outpaint_extends_the_canvas(page):
    generate(page, "a wide beach")
    page.click("#use-input")
    page.wait_for_selector("#init-source:text('Input: gallery image')")
    page.check('input[name="mode"][value="outpaint"]')
    assert page.is_disabled("#width") and page.is_hidden("#stage-mask")
    page.fill("#outpaint-right", "16")
    page.fill("#outpaint-up", "8")
    assert page.text_content("#outpaint-size") == "New size: 80 × 72 pixels"
    # The preview canvas shows the image on its extended canvas.
    assert page.locator("#stage-image").evaluate("c => [c.width, c.height]") == [80, 72]

    with page.expect_request(lambda r: r.url.endswith("/api/v1/jobs")) as sent:
        job = submit_and_wait(page, lambda: page.click("#generate"))
    request = sent.value.post_data_json["request"]
    assert request["outpaint"] == {"left": 0, "right": 16, "up": 8, "down": 0}
    stored = api_get(page, f"/api/v1/jobs/{job['id']}")
    image = api_get(page, f"/api/v1/images/{stored['image_ids'][0]}")
    assert stored["request"]["mode"] == "outpaint"
    assert (image["width"], image["height"]) == (80, 72)


def test_cancel_a_queued_and_a_running_job(browser, limner_home: Path, tiny_sd1: str):
    # The long job must outlast the test on any machine (a 150-step x 16 job of the tiny
    # model once ended before the cancel click on a fast one): 500 steps x 1000 batches.
    limits = Limits(max_steps=1000, max_batch_count=1000, max_images_per_job=1000)
    with running_server(limner_home, limits=limits) as url, studio_page(browser, url) as page:
        cancel_a_queued_and_a_running_job(page)


def cancel_a_queued_and_a_running_job(page):
    fill_txt2img(page, "a long job", steps=500)
    page.fill("#batch_count", "1000")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/jobs")) as first:
        page.click("#generate")
    long_job = first.value.json()
    page.fill("#prompt", "waits behind it")
    page.fill("#batch_count", "1")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/jobs")) as second:
        page.click("#generate")
    queued = second.value.json()

    wait_for_job_status(page, long_job["id"], "running")
    # A reloaded page lists the jobs still open.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    wait_for_job_status(page, long_job["id"], "running")
    wait_for_job_status(page, queued["id"], "queued")
    page.click(f'li.job[data-job-id="{queued["id"]}"] .job-cancel')
    wait_for_job_status(page, queued["id"], "cancelled")
    page.click(f'li.job[data-job-id="{long_job["id"]}"] .job-cancel')
    wait_for_job_status(page, long_job["id"], "cancelled")
    for job in (long_job, queued):
        assert api_get(page, f"/api/v1/jobs/{job['id']}")["status"] == "cancelled"
        assert page.locator(f'li.job[data-job-id="{job["id"]}"] .job-cancel').is_hidden()
    assert api_get(page, "/api/v1/images")["total"] == 0


def test_jobs_of_other_clients_show_up(page):
    """A job submitted by another program (here: straight to the API) appears in the job
    list while it runs, and its image in the gallery when it is done."""
    response = page.request.post(
        "/api/v1/jobs",
        data={"request": {"prompt": "from a script", "model": "tiny-sd1", "steps": 2}},
    )
    assert response.status == 201, response.text()
    job = response.json()
    wait_for_job_status(page, job["id"], "completed")
    image_id = api_get(page, f"/api/v1/jobs/{job['id']}")["image_ids"][0]
    page.wait_for_selector(f'#gallery-grid li[data-image-id="{image_id}"]')
    assert "from a script" in page.text_content(f'li.job[data-job-id="{job["id"]}"] .job-title')
    assert page.is_hidden("#error")
    # A wait that times out says what the server knows and where its worker is.
    with pytest.raises(AssertionError) as stuck:
        wait_for_job_status(page, job["id"], "failed", timeout_ms=300)
    assert '"status":"completed"' in str(stuck.value).replace(" ", "")
    assert "thread limner-worker-default" in str(stuck.value)
    assert "_loop" in str(stuck.value)  # the worker's stack, idle between jobs


def test_gallery_search_and_delete(page):
    generate(page, "an apple tree")
    generate(page, "a pear on a plate")
    page.wait_for_function("document.querySelectorAll('#gallery-grid li').length === 2")
    images = api_get(page, "/api/v1/images")["images"]
    order = page.eval_on_selector_all("#gallery-grid li", "els => els.map(e => e.dataset.imageId)")
    assert order == [i["id"] for i in images]  # newest first, as the server lists them
    assert images[0]["prompt"] == "a pear on a plate"

    page.fill("#gallery-search", "apple")
    page.wait_for_function("document.querySelectorAll('#gallery-grid li').length === 1")
    apple = images[1]
    assert page.get_attribute("#gallery-grid li", "data-image-id") == apple["id"]
    assert page.text_content("#gallery-count") == "1 image matching “apple”"

    page.click("#gallery-grid li button")
    page.click("#delete-image")
    assert page.text_content("#delete-image") == "Press again to delete"
    page.click("#delete-image")
    page.wait_for_selector("#gallery-count:text('No images matching “apple” yet.')")
    assert page.is_hidden("#viewer-actions")
    assert page.request.get(f"/api/v1/images/{apple['id']}").status == 404
    page.fill("#gallery-search", "")
    page.wait_for_function("document.querySelectorAll('#gallery-grid li').length === 1")


def test_gallery_pages_with_load_more(page):
    fill_txt2img(page, "many small pictures", steps=1)
    page.fill("#batch_size", "5")
    page.fill("#batch_count", "5")
    submit_and_wait(page, lambda: page.click("#generate"))
    page.wait_for_function("document.querySelectorAll('#gallery-grid li').length === 24")
    assert page.text_content("#gallery-count") == "25 images"
    page.click("#gallery-more")
    page.wait_for_function("document.querySelectorAll('#gallery-grid li').length === 25")
    assert page.is_hidden("#gallery-more")
    shown = page.eval_on_selector_all("#gallery-grid li", "els => els.map(e => e.dataset.imageId)")
    assert len(set(shown)) == 25
    assert sorted(shown) == sorted(i["id"] for i in api_get(page, "/api/v1/images")["images"])


def test_page_helpers(page):
    """The pure functions behind the form and the event stream, run in the page."""
    result = page.evaluate(
        r"""async () => {
        const form = await import('/form.js');
        const api = await import('/api.js');
        const values = {mode: 'inpaint', prompt: 'p', negative_prompt: 'n', model: 'tiny-sd1',
            sampler: 'Euler', schedule: '', steps: '12', guidance_scale: '6.5', width: '',
            height: '96', seed: '-1', batch_size: '2', batch_count: '3', strength: '0.4',
            mask_blur: '2', outpaint: {left: '8', right: '0', up: '0', down: '16'}};
        const inpaint = form.buildRequest(values, {init_image: 'image:abc', mask: 'data:m'});
        const outpaint = form.buildRequest({...values, mode: 'outpaint'}, {init_image: 'x'});
        const txt = form.buildRequest({...values, mode: 'txt2img'}, {init_image: 'x'});
        const back = form.buildRequest(
            {...form.valuesFromRequest({...txt, seed: 77}), mode: 'txt2img'});
        const sse = api.parseSse(
            'data: {"a": 1}\n\n: keep-alive\n\ndata: {"b":\r\n\r\ndata: {"c": 3}\n\ndata: {"d"');
        return {
            inpaint, outpaint, txt, back, sse,
            grid: [form.fitToGrid(100), form.fitToGrid(10), form.fitToGrid(5000)],
            size: form.outpaintSize(64, 64, {left: 8, right: 16, up: 0, down: 24}),
            eta: [form.formatSeconds(4.25), form.formatSeconds(125), form.formatSeconds(NaN)],
            errors: [
                api.errorMessage(422, {detail: 'steps: too many'}, ''),
                api.errorMessage(400, {error: {message: 'bad image', type: 'x'}}, ''),
                api.errorMessage(422, {detail: [{loc: ['body', 'steps'], msg: 'too big'}]}, ''),
                api.errorMessage(502, null, '<html>Bad gateway</html>'),
                api.errorMessage(401, null, ''),
            ],
        };
    }"""
    )
    inpaint = result["inpaint"]
    assert inpaint["mode"] == "inpaint" and inpaint["mask"] == "data:m"
    assert inpaint["init_image"] == "image:abc" and inpaint["strength"] == 0.4
    assert (inpaint["steps"], inpaint["guidance_scale"], inpaint["seed"]) == (12, 6.5, -1)
    assert (inpaint["width"], inpaint["height"], inpaint["schedule"]) == (None, 96, None)
    assert inpaint["mask_blur"] == 2 and "outpaint" not in inpaint
    outpaint = result["outpaint"]
    assert outpaint["outpaint"] == {"left": 8, "right": 0, "up": 0, "down": 16}
    assert outpaint["width"] is None and outpaint["height"] is None and "mask" not in outpaint
    txt = result["txt"]
    assert "init_image" not in txt and "strength" not in txt and "mask" not in txt
    back = result["back"]
    assert back == {**txt, "seed": 77, "batch_size": 1, "batch_count": 1}
    assert result["sse"] == {"events": [{"a": 1}, {"c": 3}], "rest": 'data: {"d"'}
    assert result["grid"] == [96, 64, 4096]
    assert result["size"] == {"width": 88, "height": 88}
    assert result["eta"] == ["4.3 s", "2 min 5 s", ""]
    assert result["errors"] == [
        "steps: too many",
        "bad image",
        "steps: too big",
        "the server answered 502",
        "the server needs an access token",
    ]


def test_errors_from_the_api_are_shown(browser, limner_home: Path, tiny_sd1: str):
    with running_server(limner_home, limits=Limits(max_steps=10)) as url:
        with studio_page(browser, url) as page:
            fill_txt2img(page, "too many steps for this server", steps=40)
            with page.expect_response(lambda r: r.url.endswith("/api/v1/jobs")) as answer:
                page.click("#generate")
            assert answer.value.status == 422
            assert page.is_visible("#error")
            message = page.text_content("#error-text")
            assert message.startswith("The job was not accepted:")
            assert "steps must be at most 10" in message

            # A value the form itself refuses never reaches the server.
            page.click("#error-dismiss")
            page.fill("#steps", "5")
            page.fill("#width", "65")
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
            page.click("#generate")
            assert page.text_content("#error-text").startswith("Width:")
            assert page.evaluate("document.activeElement.id") == "width"
            assert requests == []


def test_a_server_with_a_token_asks_for_it(browser, limner_home: Path, tiny_sd1: str):
    with running_server(limner_home, token="s3cret-token") as url:
        with studio_page(browser, url, wait_ready=False) as page:
            page.wait_for_selector("#auth-panel:not([hidden])")
            assert "authentication required" in page.text_content("#error-text")
            assert page.evaluate("document.activeElement.id") == "auth-token"
            page.fill("#auth-token", "s3cret-token")
            page.keyboard.press("Enter")
            page.wait_for_selector("body[data-ready=true]")
            assert page.is_hidden("#auth-panel") and page.is_hidden("#error")

            job = generate(page, "behind a token")
            row = page.locator(f'li.job[data-job-id="{job["id"]}"]')
            assert int(row.get_attribute("data-progress-events")) >= 1  # events came
            # Images come through fetch with the token, shown from blob: URLs.
            page.wait_for_function(
                "() => { const i = document.querySelector('#gallery-grid img');"
                " return i && i.src.startsWith('blob:') && i.complete && i.naturalWidth === 64; }"
            )
            page.wait_for_function(
                "() => { const i = document.getElementById('viewer-image');"
                " return i.src.startsWith('blob:') && i.complete && i.naturalWidth === 64; }"
            )


def test_keyboard_only_generate(page):
    # Every control of the form is reachable with Tab and has a name a screen reader says.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, canvas[tabindex]')]
            .filter(el => el.offsetParent !== null)
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !el.textContent.trim())
            .map(el => el.id || el.outerHTML.slice(0, 60))"""
    )
    assert unlabelled == []

    reached = []
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    for _ in range(40):
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
        if reached[-1] == "generate":
            break
        page.keyboard.press("Tab")
    for control in FORM_CONTROLS:
        assert control in reached, f"{control} is not reached with Tab: {reached}"

    # Focus is visible where the keyboard put it.
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"

    # Now the keyboard alone: back to the prompt (Shift+Tab), type, choose the model by
    # typing its name in the picker, set the steps, Ctrl+Enter.
    while page.evaluate("document.activeElement.id") != "prompt":
        page.keyboard.press("Shift+Tab")
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Tab")  # negative prompt
    page.keyboard.press("Tab")  # model
    assert page.evaluate("document.activeElement.id") == "model"
    page.keyboard.type("tiny")
    assert page.input_value("#model") == "tiny-sd1"
    while page.evaluate("document.activeElement.id") != "steps":
        page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    job = submit_and_wait(page, lambda: page.keyboard.press("Control+Enter"))
    stored = api_get(page, f"/api/v1/jobs/{job['id']}")
    assert stored["request"]["prompt"] == "typed without a mouse"
    assert stored["request"]["model"] == "tiny-sd1"
    assert stored["request"]["steps"] == 5


def test_keyboard_paints_the_mask(page, tmp_path: Path):
    page.check('input[name="mode"][value="inpaint"]')
    page.set_input_files("#init-file", str(make_png(tmp_path / "in.png")))
    page.fill("#brush-size", "8")
    page.focus("#stage-mask")
    assert page.is_visible("#brush-cursor")
    page.keyboard.down(" ")  # the brush starts in the middle
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.up(" ")
    page.keyboard.press("ArrowDown")  # moves without painting
    page.keyboard.press("ArrowDown")
    request = intercepted_job_request(page, lambda: page.click("#generate"))
    mask = decode_data_url(request["mask"]).convert("L")
    assert mask.getpixel((32, 32)) == 255  # the first dab
    assert mask.getpixel((44, 32)) == 255  # painted while moving right
    assert mask.getpixel((44, 44)) == 0  # moved down with Space up
    assert mask.getpixel((10, 10)) == 0


@pytest.mark.parametrize("width", [390, 1280])
def test_layout_follows_the_window_width(browser, server: str, width: int):
    with studio_page(browser, server, width=width) as page:
        form = page.locator("#generate-form").bounding_box()
        output = page.locator(".output").bounding_box()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow == 0  # nothing wider than the window
        if width < 700:  # one column: the results below the settings, both full width
            assert output["y"] >= form["y"] + form["height"]
            assert abs(output["x"] - form["x"]) < 1
            assert form["width"] > width * 0.9
        else:  # two columns side by side
            assert output["x"] >= form["x"] + form["width"]
            assert abs(output["y"] - form["y"]) < 1
