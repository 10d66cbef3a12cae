"""OpenAI's image API (/v1/images) through the real, unmodified `openai` SDK."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from test_server_helpers import live_server, make_image, png_bytes

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def server(limner_home, tiny_sd1):
    with live_server(limner_home, default_model="tiny-sd1", default_steps=3) as srv:
        yield srv


@pytest.fixture
def sdk(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def rgba_mask(size: int = 64) -> Image.Image:
    """OpenAI's mask: transparent where to repaint (here the left half), opaque elsewhere."""
    mask = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size // 2, size))
    return mask


def test_generate_b64_json(sdk):
    result = sdk.images.generate(
        prompt="a red apple", model="dall-e-2", n=2, size="64x64", response_format="b64_json"
    )
    assert len(result.data) == 2 and result.created > 0
    images = [decode(d.b64_json) for d in result.data]
    assert all(img.size == (64, 64) for img in images)
    assert images[0].tobytes() != images[1].tobytes()  # two seeds
    assert "a red apple" in images[0].info["parameters"]


def test_generate_url(sdk, server):
    result = sdk.images.generate(
        prompt="a boat", model="tiny-sd1", size="64x64", response_format="url"
    )
    [item] = result.data
    assert item.url.startswith(f"{server.url}/api/v1/images/") and item.url.endswith("/file")
    file = httpx.get(item.url)
    assert file.status_code == 200 and Image.open(io.BytesIO(file.content)).size == (64, 64)


def test_edit_with_mask_b64_json(sdk):
    image = make_image(64)
    result = sdk.images.edit(
        image=("image.png", png_bytes(image), "image/png"),
        mask=("mask.png", png_bytes(rgba_mask()), "image/png"),
        prompt="a red door",
        n=1,
        size="64x64",
        response_format="b64_json",
    )
    out = decode(result.data[0].b64_json).convert("RGB")
    original = image.convert("RGB")
    # Far from the edge that the default mask blur (4 px, Gaussian) softens.
    right = [(x, y) for x in range(52, 64) for y in range(64)]
    assert all(out.getpixel(p) == original.getpixel(p) for p in right)
    left = [(x, y) for x in range(0, 16) for y in range(64)]
    assert any(out.getpixel(p) != original.getpixel(p) for p in left)


def test_edit_url_and_transparent_image_as_mask(sdk):
    image = make_image(64).convert("RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 32, 64))
    result = sdk.images.edit(
        image=("image.png", png_bytes(image), "image/png"), prompt="sky", response_format="url"
    )
    assert result.data[0].url.endswith("/file")


def test_variations(sdk):
    result = sdk.images.create_variation(
        image=("image.png", png_bytes(make_image(64)), "image/png"), n=2, response_format="b64_json"
    )
    assert len(result.data) == 2 and decode(result.data[0].b64_json).size == (64, 64)


def test_errors_reach_the_sdk_as_openai_errors(sdk):
    with pytest.raises(openai.UnprocessableEntityError) as err:
        sdk.images.generate(prompt="x", size="huge", response_format="b64_json")
    assert "size" in err.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as err:
        sdk.images.generate(prompt="x", model="no-such-model")
    assert "no-such-model" in err.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as err:
        sdk.images.edit(
            image=("image.png", png_bytes(make_image(64)), "image/png"),
            mask=("mask.png", png_bytes(make_image(32)), "image/png"),
            prompt="x",
        )
    assert "same size" in err.value.body["message"]
    with pytest.raises(openai.APIStatusError) as err:
        sdk.images.edit(image=("image.png", b"not an image", "image/png"), prompt="x")
    assert err.value.status_code == 400 and "not a readable" in err.value.body["message"]
