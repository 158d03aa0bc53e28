"""The web console: static HTML, CSS and JavaScript modules served by the ingress.

``mount_console(app)`` adds two things to the ingress app, after its API
routes so it shadows none of them:

- ``GET /``: the console page (``static/index.html``);
- ``/console/...``: its stylesheets, scripts and icon, as static files.

The console needs nothing from the server but the call API it calls with the
token the user types, so nothing here is authenticated and nothing here knows
a secret. Every response carries a Content-Security-Policy that admits only
this origin's scripts, styles and connections (WebSockets included), so a
transcript line that looks like markup can never run as code.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

__all__ = ["CONSOLE_PREFIX", "SECURITY_HEADERS", "STATIC_DIR", "mount_console"]

STATIC_DIR = Path(__file__).parent / "static"
CONSOLE_PREFIX = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (the ETag makes that cheap): an upgrade never leaves a
    # browser running a mix of old and new modules.
    "Cache-Control": "no-cache",
}


class _ConsoleFiles(StaticFiles):
    """Static files with the console's headers; WebSocket upgrades are refused."""

    def file_response(
        self,
        full_path: str | PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # StaticFiles only speaks HTTP; a stray WebSocket here gets a clean refusal.
            await send({"type": "websocket.close", "code": 1008, "reason": "not a WebSocket"})
            return
        await super().__call__(scope, receive, send)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/`` and its files under ``/console``; call after the API routes."""
    index = STATIC_DIR / "index.html"

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: checkers
    async def console_page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=SECURITY_HEADERS)

    app.mount(CONSOLE_PREFIX, _ConsoleFiles(directory=STATIC_DIR), name="console")
