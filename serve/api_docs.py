"""``GET /docs``: the API's Swagger UI, every script from this origin.

FastAPI's own ``/docs`` loads Swagger UI from a CDN into the console's origin,
where the console keeps the API token (``localStorage``): a script served from
elsewhere could read it. Here Swagger UI is the copy the ``fastapi-offline``
package ships (its files only), served under ``/docs/assets``, and the page's
Content-Security-Policy admits this origin's scripts and the page's one inline
script, by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_URL", "mount_api_docs"]

DOCS_URL = "/docs"
ASSETS = f"{DOCS_URL}/assets"
SWAGGER_UI = files("fastapi_offline") / "static"


def mount_api_docs(app: FastAPI, title: str) -> None:
    """Serve the docs page for ``app.openapi_url``; build ``app`` with ``docs_url=None``."""
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{title} API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        oauth2_redirect_url=None,
    ).body
    inline = re.findall(rb"<script>(.*?)</script>", bytes(page), re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in inline
    )
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self' {hashes}; "
            # Swagger UI sets style attributes as it renders.
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }

    @app.api_route(DOCS_URL, methods=["GET", "HEAD"], include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(bytes(page), headers=headers)

    app.mount(ASSETS, StaticFiles(directory=str(SWAGGER_UI)), name="api-docs-assets")
