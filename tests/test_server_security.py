"""Security and malformed input: every bad request is a clear 4xx, never a 500; unsafe
configurations do not start."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import zlib

import httpx
import pytest

from limner.server.cli import settings_from_args
from limner.server.settings import ServerConfigError, ServerSettings
from test_server_helpers import b64_png, live_server, make_image, wait_final

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small, valid-looking PNG whose header claims width x height pixels (RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)  # far fewer bytes than the header promises
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.fixture
def server(limner_home, tiny_sd1):
    with live_server(limner_home) as srv:
        yield srv


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def job(client, request: dict, **kw) -> httpx.Response:
    return client.post("/api/v1/jobs", json={"request": {"model": "tiny-sd1", **request}, **kw})


def assert_clear_4xx(response: httpx.Response, *words: str, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    body = response.json()
    message = body["error"]["message"] if isinstance(body.get("error"), dict) else body["detail"]
    assert message and len(message) < 3000
    for word in words:
        assert word.lower() in message.lower(), (word, message)


# -- malformed values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "word"),
    [
        ({"steps": 10_000}, "steps"),
        ({"steps": -1}, "steps"),
        ({"width": -64}, "width"),
        ({"width": 4096, "height": 4096}, "pixels"),
        ({"width": 63}, "width"),
        ({"batch_size": 1000}, "batch_size"),
        ({"batch_size": 8, "batch_count": 8}, "would make 64 images"),
        ({"seed": -5}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"strength": 2}, "strength"),
        ({"prompt": "x" * 100_000}, "prompt"),
        ({"negative_prompt": "x" * 15_000}, "negative_prompt"),
        ({"mode": "paint"}, "mode"),
        ({"mode": "img2img"}, "input image"),
        ({"model": "/etc/passwd"}, "not registered"),
        ({"model": "../models/tiny-sd1"}, "not registered"),
        ({"mode": "img2img", "init_image": "/etc/hosts"}, "never as paths"),
        ({"mode": "img2img", "init_image": "not base64 !!"}, "base64"),
        ({"mode": "img2img", "init_image": "data:text/plain,hello"}, "base64"),
        ({"mode": "img2img", "init_image": base64.b64encode(b"hello").decode()}, "readable"),
        ({"mode": "img2img", "init_image": "image:../../etc/passwd"}, "image id"),
        ({"mode": "img2img", "init_image": "image:" + "0" * 32}, "no gallery image"),
        ({"mode": "img2img", "init_image": "upload:../../x"}, "upload"),
        ({"mode": "img2img", "init_image": 12}, "string"),
        ({"outpaint": {"left": 7}, "mode": "outpaint", "init_image": "x"}, "multiple of 8"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"candidates": 4, "clip": "/etc"}, "not available over http: clip"),
        ({"candidates": 64}, "would make 64 images"),
        ({"sampler": "Euler a", "schedule": "Wobbly"}, "schedule"),
    ],
)
def test_bad_values_are_refused(client, request_fields, word):
    assert_clear_4xx(job(client, {"prompt": "x", **request_fields}), word)


def test_nan_and_infinity_are_refused(client):
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"request": {"prompt": "x", "guidance_scale": ' + literal + b"}}"
        response = client.post(
            "/api/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
        assert_clear_4xx(response, "guidance_scale")
        a1111 = client.post(
            "/sdapi/v1/txt2img",
            content=b'{"prompt": "x", "cfg_scale": ' + literal + b"}",
            headers={"content-type": "application/json"},
        )
        assert_clear_4xx(a1111, "cfg_scale")
    response = client.post(
        "/api/v1/jobs",
        content=b'{"request": {"prompt": "x"}, "priority": NaN}',
        headers={"content-type": "application/json"},
    )
    assert_clear_4xx(response, "priority")


def test_bad_json_and_wrong_types(client):
    response = client.post(
        "/api/v1/jobs", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert_clear_4xx(response, "json")
    assert_clear_4xx(client.post("/api/v1/jobs", json=[1, 2]), "request")
    assert_clear_4xx(client.post("/api/v1/jobs", json={"request": "x"}), "request")
    assert_clear_4xx(
        client.post("/api/v1/jobs", json={"request": {}, "priority": 10**9}), "priority"
    )
    assert_clear_4xx(client.get("/api/v1/jobs", params={"limit": -1}), "limit")
    assert_clear_4xx(client.get("/api/v1/images", params={"offset": "x"}), "offset")


def test_decompression_bomb_is_refused_from_its_header(client):
    data = bomb_png()
    assert len(data) < 2000
    response = job(
        client, {"prompt": "x", "mode": "img2img", "init_image": base64.b64encode(data).decode()}
    )
    assert_clear_4xx(response, "50000x50000", status=413)
    a1111 = client.post(
        "/sdapi/v1/img2img", json={"prompt": "x", "init_images": [base64.b64encode(data).decode()]}
    )
    assert_clear_4xx(a1111, "50000x50000")
    openai = client.post(
        "/v1/images/edits",
        files={"image": ("bomb.png", data, "image/png")},
        data={"prompt": "x"},
    )
    assert_clear_4xx(openai, "50000x50000")
    truncated = b64_png(make_image(64))[:200]
    response = job(client, {"prompt": "x", "mode": "img2img", "init_image": truncated})
    assert_clear_4xx(response, "not a readable")


def test_oversize_body_is_refused(limner_home, tiny_sd1):
    with live_server(limner_home, limits={"max_body_bytes": 4096}) as srv, srv.client() as c:
        response = c.post("/api/v1/jobs", json={"request": {"prompt": "x" * 10_000}})
        assert_clear_4xx(response, "body", status=413)

        def chunks():
            for _ in range(10):
                yield b" " * 1024

        response = c.post(
            "/api/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413


ROUTES = [
    "/api/v1/images/{}",
    "/api/v1/images/{}/file",
    "/api/v1/jobs/{}",
]
TRAVERSALS = [
    "..",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e",
    "..%5c..%5cwindows",
    "%252e%252e%252f",
    "....//....//etc/passwd",
    "abc",
    "0" * 31 + "g",
    "%00",
]


@pytest.mark.parametrize("route", ROUTES)
def test_traversal_in_every_file_route(client, route):
    for attack in TRAVERSALS:
        url = route.format(attack)
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code, response.text[:200])
        assert "root:" not in response.text
    for attack in TRAVERSALS:  # deleting
        response = client.delete(f"/api/v1/images/{attack}")
        assert response.status_code in (404, 405), (attack, response.status_code)


def test_traversal_in_the_studio_static_route(client):
    for attack in (
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/../../etc/passwd",
    ):
        response = client.get(attack)
        assert response.status_code == 404 and "root:" not in response.text, attack


def test_host_header_is_checked(server):
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example"):
        response = httpx.get(f"{server.url}/api/v1/health", headers={"Host": host})
        assert_clear_4xx(response, "rebinding", status=403)
    for host in ("localhost", "127.0.0.1:1234", "[::1]:80", "LOCALHOST."):
        assert httpx.get(f"{server.url}/api/v1/health", headers={"Host": host}).status_code == 200


def test_origin_is_checked(server):
    port = server.url.rsplit(":", 1)[1]
    evil = httpx.post(
        f"{server.url}/api/v1/jobs",
        json={"request": {"prompt": "x"}},
        headers={"Origin": "http://evil.example"},
    )
    assert_clear_4xx(evil, "cross-origin", status=403)
    null = httpx.get(f"{server.url}/api/v1/jobs", headers={"Origin": "null"})
    assert null.status_code == 403
    same = httpx.get(f"{server.url}/api/v1/jobs", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.status_code == 200


def test_allowed_origin(limner_home):
    with live_server(limner_home, allowed_origins=["http://studio.example:3000"]) as srv:
        ok = httpx.get(f"{srv.url}/api/v1/jobs", headers={"Origin": "http://studio.example:3000"})
        assert ok.status_code == 200


def test_token_authentication(limner_home, tiny_sd1):
    with live_server(limner_home, token="s3cret") as srv:
        assert_clear_4xx(httpx.get(f"{srv.url}/api/v1/jobs"), "authentication", status=401)
        wrong = httpx.get(f"{srv.url}/api/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        ok = httpx.get(f"{srv.url}/api/v1/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(f"{srv.url}/sdapi/v1/options").status_code == 401
        assert httpx.get(f"{srv.url}/sdapi/v1/options", auth=("any", "s3cret")).status_code == 200
        assert (
            httpx.post(f"{srv.url}/v1/images/generations", json={"prompt": "x"}).status_code == 401
        )
        assert httpx.get(f"{srv.url}/openapi.json").status_code == 401
        # The studio page and the health check load without it.
        assert httpx.get(f"{srv.url}/api/v1/health").status_code == 200
        assert httpx.get(f"{srv.url}/").status_code == 200


def test_basic_authentication(limner_home):
    with live_server(limner_home, user="me", password="pw") as srv:
        assert httpx.get(f"{srv.url}/api/v1/jobs", auth=("me", "pw")).status_code == 200
        bad = httpx.get(f"{srv.url}/api/v1/jobs", auth=("me", "nope"))
        assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Basic")
        garbage = httpx.get(f"{srv.url}/api/v1/jobs", headers={"Authorization": "Basic %%%"})
        assert garbage.status_code == 401


def test_non_loopback_bind_needs_a_token():
    with pytest.raises(ServerConfigError, match="refusing to listen on 0.0.0.0"):
        ServerSettings(host="0.0.0.0").check()
    with pytest.raises(ServerConfigError, match="refusing to listen on 192.168.1.5"):
        ServerSettings(host="192.168.1.5").check()
    ServerSettings(host="0.0.0.0", token="x").check()
    ServerSettings(host="::1").check()
    with pytest.raises(ServerConfigError, match="empty"):
        ServerSettings(host="0.0.0.0", token="").check()
    with pytest.raises(ServerConfigError, match="both a user and a password"):
        ServerSettings(host="0.0.0.0", user="me").check()


def test_cli_refuses_a_non_loopback_bind_without_a_token(limner_home):
    result = subprocess.run(
        [sys.executable, "-m", "limner.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_token_file(tmp_path):
    import argparse

    from limner.server.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (tmp_path / "token").write_text("abc\n")
    args = parser.parse_args(["--host", "0.0.0.0", "--token-file", str(tmp_path / "token")])
    assert settings_from_args(args).token.get_secret_value() == "abc"
    args = parser.parse_args(["--host", "0.0.0.0", "--token-file", str(tmp_path / "missing")])
    with pytest.raises(Exception, match="cannot read the token file"):
        settings_from_args(args)


def test_queue_bound_is_429(limner_home, tiny_sd1):
    with live_server(limner_home, limits={"max_queued_jobs": 1}) as srv, srv.client() as c:
        first = job(c, {"prompt": "x", "steps": 100, "width": 64, "height": 64, "batch_count": 5})
        assert first.status_code == 201
        responses = [job(c, {"prompt": "x"}) for _ in range(3)]
        assert any(r.status_code == 429 for r in responses)
        full = next(r for r in responses if r.status_code == 429)
        assert "limit is 1" in full.json()["error"]["message"]
        c.post(f"/api/v1/jobs/{first.json()['id']}/cancel")
        wait_final(c, first.json()["id"])


def test_unknown_routes_and_methods(client):
    assert_clear_4xx(client.get("/api/v1/nope"), status=404)
    assert_clear_4xx(client.put("/api/v1/jobs"), status=405)


NASTY = [None, -1, 10**30, -(10**30), 1.5, "x", "", [], {}, [1], {"a": 1}, True, "NaN", "../x"]


def test_no_value_of_any_a1111_or_native_field_makes_a_500(client):
    from limner.server.a1111 import Img2ImgRequest, Txt2ImgRequest

    image = b64_png(make_image(64))
    # steps 151 passes the request's own bounds but not the server's, checked last: a
    # request that gets that far is refused there, so nothing is generated.
    base = {"prompt": "x", "steps": 151, "width": 64, "height": 64}
    cases = [("/sdapi/v1/txt2img", Txt2ImgRequest, base)]
    cases.append(("/sdapi/v1/img2img", Img2ImgRequest, {**base, "init_images": [image]}))
    seen = 0
    for route, model, body in cases:
        for name in model.model_fields:
            if name == "steps":
                continue
            for value in NASTY:
                response = client.post(route, json={**body, name: value})
                assert response.status_code < 500, (route, name, value, response.text[:300])
                seen += 1
    overrides = ["sd_model_checkpoint", "CLIP_stop_at_last_layers", "eta_ddim", "sd_vae"]
    for key in overrides:
        for value in NASTY:
            response = client.post(
                "/sdapi/v1/txt2img", json={**base, "override_settings": {key: value}}
            )
            assert response.status_code < 500, (key, value, response.text[:300])
            response = client.post("/sdapi/v1/options", json={key: value})
            assert response.status_code < 500, (key, value, response.text[:300])
    from limner.requests import GenerationRequest

    for name in GenerationRequest.model_fields:
        if name == "steps":
            continue
        for value in NASTY:
            response = job(client, {**base, name: value})
            assert response.status_code < 500, (name, value, response.text[:300])
    assert seen > 500
