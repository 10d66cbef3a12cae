"""Server settings: where it listens, who may call it, and the bounds on every input."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from limner.errors import LimnerError

__all__ = ["Limits", "ServerConfigError", "ServerSettings", "is_loopback"]


class ServerConfigError(LimnerError):
    """The server is configured in a way that would be unsafe or cannot work."""

    exit_code = 2


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Limits(BaseModel):
    """Bounds on what one request may ask for; past them the answer is a 4xx."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        64 * 2**20, ge=1024, description="request body, counted while it is read"
    )
    max_image_pixels: int = Field(
        4096 * 4096, ge=64 * 64, description="an uploaded image, checked from its header"
    )
    max_image_side: int = Field(8192, ge=64)
    max_output_pixels: int = Field(2048 * 2048, ge=64 * 64, description="width x height")
    max_prompt_chars: int = Field(10_000, ge=1)
    max_steps: int = Field(150, ge=1)
    max_batch_size: int = Field(8, ge=1)
    max_batch_count: int = Field(16, ge=1)
    max_images_per_job: int = Field(32, ge=1)
    max_queued_jobs: int = Field(1000, ge=1)
    max_page_size: int = Field(500, ge=1, description="items per page of a listing")


class ServerSettings(BaseModel):
    """How `limner serve` runs. `check()` refuses unsafe combinations."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="required as 'Authorization: Bearer ...'")
    user: str | None = Field(None, description="HTTP Basic user (with password)")
    password: SecretStr | None = None
    public_hosts: list[str] = Field(
        default_factory=list, description="Host header names accepted besides loopback ones"
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="browser origins (scheme://host[:port]) allowed to call"
    )
    default_model: str | None = Field(
        None, description="model of A1111/OpenAI requests that name none (None: built-in)"
    )
    default_steps: int = Field(
        20, ge=1, le=150, description="sampling steps of OpenAI requests (they cannot say)"
    )
    home: Path | None = Field(None, description="limner home folder (None: the default one)")
    limits: Limits = Field(default_factory=Limits)

    @property
    def auth_required(self) -> bool:
        return self.token is not None or self.user is not None

    def check(self) -> None:
        """Raise `ServerConfigError` for a configuration the server must not start with."""
        if self.token is not None and not self.token.get_secret_value():
            raise ServerConfigError("the access token is empty")
        if (self.user is None) != (self.password is None):
            raise ServerConfigError("give both a user and a password, or neither")
        if self.password is not None and not self.password.get_secret_value():
            raise ServerConfigError("the password is empty")
        if not is_loopback(self.host) and not self.auth_required:
            raise ServerConfigError(
                f"refusing to listen on {self.host}: that address is reachable from other "
                "machines, and without authentication anyone there could use this server. "
                "Give an access token (--token or --token-file), or --user and --password, "
                "or listen on 127.0.0.1"
            )
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ServerConfigError(
                    f"allowed origin {origin!r} must look like http://host:port (no path, no '*')"
                )
