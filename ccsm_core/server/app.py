"""The OpenAI-compatible HTTP app: speech, voices, completions, health, metrics and the web page.

Every request that runs a model goes through the `Engine` (one worker owns the models), so the
handlers only check requests, wait for events and encode them. Errors always have OpenAI's
shape (see `openai_api.ApiError`); a gate in front of the app checks the API key and the body
size, tags each request with an id and writes one JSON access-log line per request.

The pieces: `context` (what the handlers share), `gate`, `errors`, `jobs` (a handler's job on the
engine), `streaming`, and the routes in `routes_basic`, `routes_speech`, `routes_voices` and
`routes_text`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from .context import AppContext
from .errors import add_error_handlers
from .gate import Gate
from .metrics import Metrics
from .routes_basic import add_basic_routes
from .routes_speech import add_speech_routes
from .routes_text import add_text_routes
from .routes_voices import add_voice_routes

DEFAULT_MAX_INPUT_CHARS = 20_000
DEFAULT_MAX_BODY_BYTES = 25 * 2**20


def create_app(
    engine: Any,
    *,
    api_key: str | None = None,
    voices_root: str | Path | None = None,
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_name: str = "csm",
    text_model_name: str | None = None,
    watermark: bool = True,
) -> FastAPI:
    """The app serving ``engine`` (started and stopped by the caller); speech is watermarked
    with the default watermarker unless ``watermark`` is False."""
    from ..voices import VoiceStore
    from ..watermark import pick_watermarker

    if max_input_chars < 1 or max_body_bytes < 1:
        raise ValueError("max_input_chars and max_body_bytes must be >= 1")
    if engine.text is not None and text_model_name is None:
        text_model_name = Path(str(getattr(engine.text, "path", "text"))).stem
    ctx = AppContext(
        engine=engine,
        store=VoiceStore(Path(voices_root) if voices_root is not None else None),
        marker=pick_watermarker(None, None) if engine.speech is not None and watermark else None,
        metrics=Metrics(engine),
        api_key=api_key or None,
        max_input_chars=max_input_chars,
        max_body_bytes=max_body_bytes,
        model_name=model_name,
        text_model_name=text_model_name,
    )
    app = FastAPI(title="ccsm", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    add_error_handlers(app)
    add_basic_routes(app, ctx)
    add_speech_routes(app, ctx)
    add_voice_routes(app, ctx)
    add_text_routes(app, ctx)
    app.add_middleware(Gate, ctx=ctx)
    return app
