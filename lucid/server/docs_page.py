"""`/docs` without a network: FastAPI's Swagger UI page, its script and stylesheet served from the package's vendored
copy (static/vendor/swagger-ui) instead of a CDN."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

SWAGGER = "/static/vendor/swagger-ui"


def install_offline_docs(app: FastAPI) -> None:
    """Serve /docs from local assets; build the app with `docs_url=None` so FastAPI's CDN page is not routed."""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API docs",
                                   swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER}/swagger-ui.css", swagger_favicon_url="data:,")
