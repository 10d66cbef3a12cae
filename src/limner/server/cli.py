"""`limner serve`: its arguments, and starting uvicorn with the app.

Kept here, not in ``limner/cli.py``, so that the command line of the other commands does
not import the web framework.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import SecretStr, ValidationError

from limner.errors import InputFileError, InvalidRequestError
from limner.requests import describe_validation_error
from limner.server.settings import ServerConfigError, ServerSettings

__all__ = ["add_arguments", "run", "settings_from_args"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860, as A1111)")
    p.add_argument(
        "-m", "--model", default=None, help="model of requests that name none (default: built-in)"
    )
    auth = p.add_argument_group(
        "authentication (required to listen on anything but a loopback address)"
    )
    auth.add_argument(
        "--token-file", type=Path, help="file holding the access token (Authorization: Bearer)"
    )
    auth.add_argument(
        "--token",
        help="the access token itself (visible to other users in `ps`: prefer --token-file)",
    )
    auth.add_argument("--user", help="HTTP Basic user name (with --password-file or --password)")
    auth.add_argument("--password-file", type=Path, help="file holding the HTTP Basic password")
    auth.add_argument("--password", help="the HTTP Basic password itself (prefer --password-file)")
    web = p.add_argument_group("browsers")
    web.add_argument(
        "--public-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides loopback ones (repeatable; DNS rebinding protection)",
    )
    web.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (http://host:port) allowed to call the API (repeatable)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=20,
        help="sampling steps of OpenAI-API requests, which cannot say (default 20)",
    )
    p.add_argument(
        "--max-queued", type=int, default=1000, help="jobs waiting at most (default 1000)"
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )


def _secret(value: str | None, path: Path | None, what: str) -> SecretStr | None:
    if value is not None and path is not None:
        raise InvalidRequestError(f"give the {what} or its file, not both")
    if path is not None:
        try:
            value = path.expanduser().read_text(encoding="utf-8").strip()
        except OSError as err:
            raise InputFileError(f"cannot read the {what} file {path}: {err.strerror}") from None
    return None if value is None else SecretStr(value)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    try:
        settings = ServerSettings(
            host=args.host,
            port=args.port,
            token=_secret(args.token, args.token_file, "token"),
            user=args.user,
            password=_secret(args.password, args.password_file, "password"),
            public_hosts=args.public_host,
            allowed_origins=args.allow_origin,
            default_model=args.model,
            default_steps=args.steps,
            limits={"max_queued_jobs": args.max_queued},
        )
    except ValidationError as err:
        raise ServerConfigError(
            describe_validation_error(err).replace("request", "settings", 1)
        ) from None
    settings.check()
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.default_model:
        from limner import api

        names = [m.name for m in api.list_models(with_hashes=False)]
        if settings.default_model not in names:
            raise ServerConfigError(
                f"--model {settings.default_model!r} is not a registered model "
                f"(known: {', '.join(names)})"
            )
    import uvicorn

    from limner.server.app import create_app

    app = create_app(settings)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"limner: serving on http://{shown}:{settings.port}/", file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        # Our FrontDoor checks Host; uvicorn must not trust proxy headers it cannot verify.
        proxy_headers=False,
        server_header=False,
    )
    return 0
