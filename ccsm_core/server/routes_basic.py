"""The web page and its static files, /health, /v1/models and /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from .context import AppContext

STATIC = Path(__file__).parent / "static"
_PLACEHOLDER = "<!doctype html><title>ccsm</title><p>ccsm server: see <code>/v1/models</code> and <code>/health</code>."


def add_basic_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the page, the static files, /health, /v1/models and /metrics to ``app``."""
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC / "index.html"
        return FileResponse(page) if page.is_file() else HTMLResponse(_PLACEHOLDER)

    @app.get("/health")
    async def health() -> JSONResponse:
        e = ctx.engine
        body = {
            "status": "stopping" if e.stopping else "ok",
            "speech": e.speech is not None,
            "text": e.text is not None,
            "active": e.active,
            "queued": e.queue_depth,
        }
        return JSONResponse(body, status_code=503 if e.stopping else 200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = ([ctx.model_name] if ctx.engine.speech is not None else []) + (
            [ctx.text_model_name] if ctx.engine.text is not None and ctx.text_model_name else []
        )
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "ccsm"} for n in names],
        }

    @app.get("/metrics")
    def metrics() -> Response:
        body, kind = ctx.metrics.render()
        return Response(body, media_type=kind)
