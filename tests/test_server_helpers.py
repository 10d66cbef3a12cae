"""Shared by the server tests: a real uvicorn server (in a thread or a subprocess) on a
free loopback port, and small helpers. Holds no tests of its own."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

from limner.server.app import create_app
from limner.server.settings import ServerSettings
from tiny_models import make_image, make_mask

__all__ = [
    "LiveServer",
    "b64_png",
    "free_socket",
    "live_server",
    "make_image",
    "make_mask",
    "png_bytes",
    "subprocess_server",
    "wait_final",
]

FINAL = {"completed", "failed", "cancelled"}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64_png(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


@contextmanager
def live_server(home: Path, **settings) -> Iterator[LiveServer]:
    """uvicorn with the app in a thread of this process, on a free loopback port."""
    sock = free_socket()
    port = sock.getsockname()[1]
    app = create_app(ServerSettings(port=port, home=home, **settings))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", home)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def subprocess_server(
    home: Path, *args: str, port: int | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`limner serve` as a child process (killed at the end if still running)."""
    if port is None:
        sock = free_socket()
        port = sock.getsockname()[1]
        sock.close()
    env = {**os.environ, "LIMNER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    log = open(home / f"server-{port}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "limner.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"limner serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("limner serve did not become ready")


def wait_final(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")
