"""A1111's API (/sdapi/v1) through the real, unmodified `webuiapi` client and raw HTTP."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
import webuiapi
from PIL import Image

from test_server_helpers import b64_png, live_server, make_image, make_mask

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def server(limner_home, tiny_sd1, tiny_sdxl):
    with live_server(limner_home) as srv:
        yield srv


@pytest.fixture
def webui(server):
    host, port = server.url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=3)


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def test_webuiapi_txt2img(webui):
    webui.util_set_model("tiny-sd1")
    result = webui.txt2img(prompt="a red apple", seed=42, width=64, height=64, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    info = result.info
    assert info["all_seeds"] == [42, 43] and info["seed"] == 42
    assert info["sd_model_name"] == "tiny-sd1" and info["sampler_name"] == "Euler a"
    assert len(info["infotexts"]) == 2 and "Seed: 43" in info["infotexts"][1]
    assert result.parameters["prompt"] == "a red apple" and result.parameters["steps"] == 3
    # The PNG carries A1111's parameters text, as A1111's own API images do.
    assert "Steps: 3" in result.images[0].info["parameters"]


def test_webuiapi_img2img_with_mask(webui):
    webui.util_set_model("tiny-sd1")
    image, mask = make_image(64), make_mask(64)
    result = webui.img2img(
        images=[image],
        mask_image=mask,
        prompt="a red door",
        seed=7,
        width=64,
        height=64,
        denoising_strength=0.8,
        mask_blur=0,
        inpainting_fill=1,
        inpaint_full_res=False,
    )
    [out] = result.images
    assert out.size == (64, 64) and result.info["all_seeds"] == [7]
    assert result.parameters["init_images"] is None  # not echoed back, as A1111
    # Outside the mask the original pixels are kept exactly (mask_blur 0).
    original = image.convert("RGB").load()
    generated = out.convert("RGB").load()
    keep = mask.load()
    outside = [(x, y) for x in range(64) for y in range(64) if keep[x, y] == 0]
    assert all(original[p] == generated[p] for p in outside)
    inside = [(x, y) for x in range(64) for y in range(64) if keep[x, y] == 255]
    assert any(original[p] != generated[p] for p in inside)


def test_webuiapi_switches_the_model_through_options(webui):
    titles = webui.util_get_model_names()
    assert "builtin" in titles and any(t.startswith("tiny-sdxl [") for t in titles)
    webui.util_set_model("tiny-sdxl")
    assert webui.util_get_current_model().startswith("tiny-sdxl")
    result = webui.txt2img(prompt="x", seed=1, width=64, height=64)
    assert result.info["sd_model_name"] == "tiny-sdxl"
    webui.util_set_model("tiny-sd1")
    assert webui.util_get_current_model().startswith("tiny-sd1")
    assert (
        webui.txt2img(prompt="x", seed=1, width=64, height=64).info["sd_model_name"] == "tiny-sd1"
    )


def test_override_settings_model_for_one_request(client):
    body = {
        "prompt": "x",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 3,
        "override_settings": {"sd_model_checkpoint": "tiny-sdxl", "CLIP_stop_at_last_layers": 2},
    }
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["sd_model_name"] == "tiny-sdxl" and info["clip_skip"] == 2
    assert "Clip skip: 2" in info["infotexts"][0]


def test_eta_reaches_samplers_that_take_it(client):
    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1}
    body["override_settings"] = {"sd_model_checkpoint": "tiny-sd1"}
    ddim = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DDIM", "eta": 0.5})
    assert ddim.status_code == 200, ddim.text
    assert "Eta DDIM: 0.5" in json.loads(ddim.json()["info"])["infotexts"][0]
    euler_a = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "Euler a", "eta": 0.5})
    assert euler_a.status_code == 200, euler_a.text
    assert "Eta: 0.5" in json.loads(euler_a.json()["info"])["infotexts"][0]


def test_samplers_models_progress_interrupt_pnginfo(webui, client):
    names = [s["name"] for s in webui.get_samplers()]
    assert "Euler a" in names and "DPM++ 2M" in names
    models = webui.get_sd_models()
    tiny = next(m for m in models if m["model_name"] == "tiny-sd1")
    assert tiny["title"] == f"tiny-sd1 [{tiny['hash']}]" and len(tiny["sha256"]) == 64
    idle = webui.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    assert webui.interrupt() == {}
    webui.util_set_model("tiny-sd1")
    result = webui.txt2img(prompt="a (red:1.2) apple", seed=5, width=64, height=64)
    info = webui.png_info(result.images[0])
    assert info.info.startswith("a (red:1.2) apple")
    assert info.parameters["Seed"] == "5" and info.parameters["Prompt"] == "a (red:1.2) apple"
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert [s["label"] for s in schedulers] == ["Automatic", "Karras", "Exponential"]


def test_refuses_what_it_cannot_honour(client):
    base = {"prompt": "x", "steps": 2, "width": 64, "height": 64}
    for extra, named in [
        ({"restore_faces": True}, "restore_faces"),
        ({"tiling": True}, "tiling"),
        ({"enable_hr": True}, "enable_hr"),
        ({"styles": ["cinematic"]}, "styles"),
        ({"subseed_strength": 0.3}, "subseed_strength"),
        ({"alwayson_scripts": {"controlnet": {"args": []}}}, "alwayson_scripts"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"scheduler": "sgm_uniform"}, "scheduler"),
        ({"sampler_name": "DPM2 a", "eta": 0.5}, "eta other than 1 with DPM2 a"),
        ({"sampler_name": "No Such Sampler"}, "sampler"),
        ({"override_settings": {"sd_vae": "other.vae.pt"}}, "sd_vae"),
        ({"override_settings": {"unknown_option": 1}}, "unknown_option"),
    ]:
        response = client.post("/sdapi/v1/txt2img", json={**base, **extra})
        assert response.status_code == 422, (extra, response.text)
        body = response.json()
        assert named in body["detail"] and body["error"] == "Unprocessable Entity"
    image = b64_png(make_image(64))
    mask = b64_png(make_mask(64))
    for extra, named in [
        ({"inpaint_full_res": True}, "inpaint_full_res"),
        ({"inpainting_fill": 0, "inpaint_full_res": False}, "inpainting_fill"),
        ({"resize_mode": 2, "inpaint_full_res": False}, "resize_mode"),
    ]:
        body = {**base, "init_images": [image], "mask": mask, **extra}
        response = client.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 422 and named in response.json()["detail"], response.text


def test_unknown_model_and_bad_values(client):
    response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
    assert response.status_code == 422 and "nope" in response.json()["detail"]
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": -3})
    assert response.status_code == 422 and "steps" in response.json()["detail"]
    response = client.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": ["@@@"]})
    assert response.status_code == 422 and "base64" in response.json()["detail"]
    response = client.post("/sdapi/v1/img2img", json={"prompt": "x"})
    assert response.status_code == 422 and "init_images" in response.json()["detail"]


def test_inpainting_mask_invert(client):
    mask = make_mask(64)
    body = {
        "prompt": "x",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 1,
        "init_images": [b64_png(make_image(64))],
        "mask": b64_png(mask),
        "mask_blur": 0,
        "inpainting_fill": 1,
        "inpaint_full_res": False,
        "inpainting_mask_invert": 1,
        "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
    }
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    out = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).convert("RGB")
    original = make_image(64).convert("RGB")
    # Inverted: what was white in the mask is kept now.
    kept = [(x, y) for x in range(64) for y in range(64) if mask.getpixel((x, y)) == 255]
    assert all(out.getpixel(p) == original.getpixel(p) for p in kept)


def test_sdapi_errors_are_a1111_shaped(server):
    response = httpx.post(f"{server.url}/sdapi/v1/txt2img", content=b"{not json")
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
