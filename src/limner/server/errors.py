"""Errors as HTTP answers: every bad input is a 4xx with a message a person can act on.

Each API family gets the error body its clients parse: OpenAI's ``{"error": {"message",
"type", "param", "code"}}`` under ``/v1/``, AUTOMATIC1111's ``{"error", "detail", "body",
"errors"}`` under ``/sdapi/``, and the native ``{"error": {"status", "message"}}``
everywhere else (docs/api.md). Validation messages never echo
the input back (it may be 100k characters, or a NaN that JSON cannot encode).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from limner.errors import InputFileError, InvalidRequestError, LimnerError, ModelLoadError
from limner.jobs import JobNotFoundError, JobStateError, QueueFullError

__all__ = ["ApiError", "error_response", "install_error_handlers", "status_for"]

log = logging.getLogger("limner.server")

MAX_MESSAGE = 2000


class ApiError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


_STATUS_BY_ERROR: list[tuple[type[LimnerError], int]] = [
    (JobNotFoundError, 404),
    (JobStateError, 409),
    (QueueFullError, 429),
    (InvalidRequestError, 422),
    (InputFileError, 400),
    (ModelLoadError, 400),
]


def status_for(error: LimnerError | str | None) -> int:
    """The HTTP status of a `LimnerError`, or of its class name (as stored with a job)."""
    for cls, status in _STATUS_BY_ERROR:
        if isinstance(error, cls) or error == cls.__name__:
            return status
    if isinstance(error, LimnerError):
        return 400
    if isinstance(error, str) and error.endswith("Error") and error != "internal":
        return 400  # another LimnerError subclass, by name
    return 500


def error_response(
    request: Request, status: int, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        _error_body(request.url.path, status, message[:MAX_MESSAGE]),
        status_code=status,
        headers=headers,
    )


def _error_body(path: str, status: int, message: str) -> dict:
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status in (401, 403):
            kind = "authentication_error" if status == 401 else "permission_error"
        return {
            "error": {
                "message": message,
                "type": kind,
                "param": None,
                "code": None,
                "status": status,
            }
        }
    if path.startswith("/sdapi/"):
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return {"error": phrase, "detail": message, "body": "", "errors": message}
    return {"error": {"status": status, "message": message}}


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors():
        loc = [str(p) for p in problem.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "request"
        message = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
        if problem.get("type") == "json_invalid":
            detail = (problem.get("ctx") or {}).get("error")
            message = f"the body is not valid JSON ({detail})" if detail else "invalid JSON"
            where = "body"
        parts.append(f"{where}: {message}"[:300])
    return "invalid request: " + "; ".join(parts[:20])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(request, 422, describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.message, headers=exc.headers)

    @app.exception_handler(LimnerError)
    async def _limner(request: Request, exc: LimnerError):
        return error_response(request, status_for(exc), str(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        # A bug, not bad input: logged with its traceback, answered without one.
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(request, 500, f"internal server error ({type(exc).__name__})")
