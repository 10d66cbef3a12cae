"""The FastAPI application of `limner serve`: three API families, the studio, one queue.

Start-up opens the job database in the home folder, recovers what a crash left running
(`SqliteJobStore.recover`), and starts the worker; shutdown stops the worker after its
current step and puts its job back in the queue.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from limner import __version__
from limner.home import home_dir
from limner.jobs import EventHub, InputStore, SqliteJobStore, Worker
from limner.server import a1111, native, openai_api
from limner.server.errors import install_error_handlers
from limner.server.security import FrontDoor
from limner.server.services import Services
from limner.server.settings import ServerSettings

__all__ = ["STUDIO_DIR", "create_app", "database_path"]

log = logging.getLogger("limner.server")

STUDIO_DIR = Path(__file__).parent / "studio"


def database_path(home: Path) -> Path:
    return home / "limner.db"


def open_services(settings: ServerSettings) -> Services:
    home = Path(settings.home) if settings.home else home_dir()
    home.mkdir(parents=True, exist_ok=True)
    store = SqliteJobStore(database_path(home))
    recovery = store.recover()
    if recovery.requeued or recovery.failed or recovery.cancelled:
        log.warning(
            "recovered after an unclean stop: %d job(s) queued again, %d failed, %d cancelled",
            len(recovery.requeued),
            len(recovery.failed),
            len(recovery.cancelled),
        )
    hub = EventHub()
    inputs = InputStore(home / "uploads")
    outputs = home / "outputs" / "jobs"
    worker = Worker(store, hub, outputs_root=outputs, inputs=inputs)
    return Services(settings, store, hub, worker, inputs, outputs)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app; `settings.check()` has refused unsafe configurations already."""
    settings = settings or ServerSettings()
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services = open_services(settings)
        app.state.services = services
        services.worker.start()
        try:
            yield
        finally:
            services.worker.stop()
            services.store.close()

    app = FastAPI(
        title="limner",
        version=__version__,
        description="Image synthesis on your own machine: native, A1111 and OpenAI APIs.",
        lifespan=lifespan,
        # The schema is served (/openapi.json); the interactive pages are not: they load
        # their scripts from a CDN, and this server works offline.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(native.router)
    app.include_router(a1111.router)
    app.include_router(openai_api.router)
    # The studio: static files, mounted last so that every API route is matched first.
    if STUDIO_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STUDIO_DIR, html=True), name="studio")
    app.add_middleware(FrontDoor, settings=settings)
    return app
