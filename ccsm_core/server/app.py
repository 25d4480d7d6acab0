"""The OpenAI-compatible HTTP app: speech, voices, completions, health, metrics and the web page.

Every request that runs a model goes through the `Engine` (one worker owns the models), so the
handlers here only check requests, wait for events and encode them. Errors always have OpenAI's
shape (see `openai_api.ApiError`); a gate in front of the app checks the API key and the body
size, tags each request with an id and writes one JSON access-log line per request.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from ..errors import CcsmError
from . import encode
from .engine import Cancelled, QueueFull, Ticket
from .metrics import Metrics
from .openai_api import (
    MAX_CONTEXT_SECONDS,
    ApiError,
    ChatRequest,
    CompletionRequest,
    SpeechRequest,
    bad,
    chat_messages,
    check_speech,
    check_speech_model,
    check_text_model,
    completion_prompt,
    context_audio,
    decode_audio,
    from_ccsm,
    speaker_of,
    text_settings,
    unknown_voice,
    validation_message,
)

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/", "/health", "/favicon.ico")  # and /static/...: no API key needed
DEFAULT_MAX_INPUT_CHARS = 20_000
DEFAULT_MAX_BODY_BYTES = 25 * 2**20
MAX_VOICE_SECONDS = 60.0  # all recordings of one uploaded voice together
MAX_VOICE_TURNS = 16
DISCONNECT_POLL_S = 0.1
REQUEST_ID_KEY = "ccsm.request_id"  # the scope key holding a request's id
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PLACEHOLDER = "<!doctype html><title>ccsm</title><p>ccsm server: see <code>/v1/models</code> and <code>/health</code>."

access_log = logging.getLogger("ccsm.access")
log = logging.getLogger("ccsm.server")


@dataclass
class _Ctx:
    """What the handlers share."""

    engine: Any
    store: Any  # VoiceStore
    marker: Any  # AppliedWatermark | None
    metrics: Metrics
    api_key: str | None
    max_input_chars: int
    max_body_bytes: int
    model_name: str
    text_model_name: str | None


@dataclass(frozen=True)
class _TextDone:
    """The last event of a text job: why it ended and the token counts."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def create_app(
    engine: Any,
    *,
    api_key: str | None = None,
    voices_root: str | Path | None = None,
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_name: str = "csm",
    text_model_name: str | None = None,
) -> FastAPI:
    """The app serving ``engine`` (started and stopped by the caller)."""
    from ..voices import VoiceStore
    from ..watermark import pick_watermarker

    if max_input_chars < 1 or max_body_bytes < 1:
        raise ValueError("max_input_chars and max_body_bytes must be >= 1")
    if engine.text is not None and text_model_name is None:
        text_model_name = Path(str(getattr(engine.text, "path", "text"))).stem
    ctx = _Ctx(
        engine=engine,
        store=VoiceStore(Path(voices_root) if voices_root is not None else None),
        marker=pick_watermarker(None, None) if engine.speech is not None else None,
        metrics=Metrics(engine),
        api_key=api_key or None,
        max_input_chars=max_input_chars,
        max_body_bytes=max_body_bytes,
        model_name=model_name,
        text_model_name=text_model_name,
    )
    app = FastAPI(title="ccsm", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    _add_error_handlers(app)
    _add_basic_routes(app, ctx)
    _add_speech_routes(app, ctx)
    _add_voice_routes(app, ctx)
    _add_text_routes(app, ctx)
    app.add_middleware(_Gate, ctx=ctx)
    return app


# --------------------------------------------------------------------------------------------
# errors


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, ApiError)
        return _error_response(e)

    async def invalid(request: Request, e: Exception) -> Response:
        assert isinstance(e, RequestValidationError)
        message, param = validation_message(list(e.errors()))
        return _error_response(bad(message, param))

    async def http_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        if e.status_code == 404:
            message = f"{request.method} {request.url.path} does not exist: see docs/server.md for the endpoints"
        elif e.status_code == 405:
            message = f"{request.url.path} does not take {request.method}"
        else:
            message = str(e.detail)
        return _error_response(ApiError(e.status_code, message, headers=dict(e.headers or {})))

    async def bug(request: Request, e: Exception) -> Response:
        # the server (uvicorn) logs the traceback: the client gets none
        rid = request.scope.get(REQUEST_ID_KEY, "")
        log.error("internal error on %s %s (request %s): %s", request.method, request.url.path, rid, type(e).__name__)
        return _error_response(ApiError(500, f"internal server error (request {rid}): the server's log has the cause"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, bug)


def _engine_error(ctx: _Ctx, e: BaseException, ticket: Ticket | None = None) -> ApiError:
    """An error raised by the engine (or while submitting) as an HTTP error."""
    if isinstance(e, QueueFull):
        return ApiError(
            429,
            f"the server is busy: {e.one_line()}",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(e.retry_after)},
        )
    if isinstance(e, Cancelled):
        if ctx.engine.stopping:
            return ApiError(503, "the server is stopping: retry when it is back", code="unavailable")
        if ticket is not None and ticket.cancelled:
            return ApiError(499, "the request was cancelled", code="cancelled")
        return ApiError(504, e.one_line(), code="timeout")
    if isinstance(e, ApiError):
        return e
    if isinstance(e, CcsmError):
        return from_ccsm(e)
    log.error("internal error in a %s request", ticket.kind if ticket else "", exc_info=e)
    return ApiError(500, "internal server error")


def _submit(ctx: _Ctx, kind: str, make: Callable[[Any], Iterator[Any]]) -> Ticket:
    if ctx.engine.stopping:
        raise ApiError(503, "the server is stopping: retry when it is back", code="unavailable")
    try:
        return ctx.engine.submit(kind, make, loop=asyncio.get_running_loop())
    except (QueueFull, Cancelled) as e:
        raise _engine_error(ctx, e) from None


class _Watch:
    """Cancels a ticket when its client goes away (polled) or when the handler leaves early."""

    def __init__(self, ticket: Ticket, request: Request) -> None:
        self.ticket, self.request = ticket, request
        self.task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while not self.ticket.cancelled:
            if await self.request.is_disconnected():
                self.ticket.cancel()
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    async def __aenter__(self) -> _Watch:
        self.task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
        self.ticket.cancel()  # no effect once the request has ended


async def _events(ctx: _Ctx, ticket: Ticket) -> AsyncIterator[Any]:
    """The ticket's events; an engine error becomes an `ApiError`."""
    try:
        async for ev in ticket:
            yield ev
    except ApiError:
        raise
    except Exception as e:
        raise _engine_error(ctx, e, ticket) from None


async def _begin(ctx: _Ctx, ticket: Ticket, request: Request) -> tuple[_Watch, AsyncIterator[Any], Any]:
    """For a streamed response: watch the client and wait for the first event, so an error
    before any output still gets its own status (the body's generator exits the watch)."""
    watch = _Watch(ticket, request)
    await watch.__aenter__()
    events = _events(ctx, ticket).__aiter__()
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await watch.__aexit__()
        raise
    return watch, events, first


# --------------------------------------------------------------------------------------------
# the gate: request id, API key, body size, access log


class _Gate:
    """Pure ASGI middleware in front of every route (streaming-safe)."""

    def __init__(self, app: Any, ctx: _Ctx) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = rid
        status = 0

        async def send_(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            refused = self._refuse(scope, headers)
            if refused is not None:
                await _send_json(send_, refused)
            else:
                await self.app(scope, self._limited(receive), send_)
        finally:
            seconds = time.perf_counter() - t0
            code = status or 500
            route = getattr(scope.get("route"), "path", None) or ("/static" if _is_static(scope) else "unmatched")
            self.ctx.metrics.observe_http(scope["method"], route, code, seconds)
            access_log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": code,
                        "ms": round(seconds * 1000, 1),
                        "request_id": rid,
                    }
                )
            )

    def _refuse(self, scope: dict[str, Any], headers: dict[str, str]) -> ApiError | None:
        key = self.ctx.api_key
        if key is not None and scope["path"] not in OPEN_PATHS and not _is_static(scope):
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                what = "no API key was given" if not auth else "the API key is wrong"
                return ApiError(
                    401,
                    f"{what}: send 'Authorization: Bearer <key>' with the server's --api-key",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 18:
                return bad("Content-Length is not a number")
            if int(length) > self.ctx.max_body_bytes:
                return _too_large(self.ctx.max_body_bytes)
        return None

    def _limited(self, receive: Any) -> Any:
        """``receive`` that fails with 413 once a body without Content-Length grows too large."""
        seen = 0
        limit = self.ctx.max_body_bytes

        async def receive_() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, _too_large(limit).message)
            return message

        return receive_


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than this server's {limit / 2**20:g} MiB: send less (or raise --max-body-bytes)",
        code="request_too_large",
    )


def _is_static(scope: dict[str, Any]) -> bool:
    return str(scope["path"]).startswith("/static/")


async def _send_json(send: Any, e: ApiError) -> None:
    body = json.dumps(e.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in e.headers.items()]
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------------------
# page, health, models, metrics


def _add_basic_routes(app: FastAPI, ctx: _Ctx) -> None:
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


# --------------------------------------------------------------------------------------------
# speech


def _need_speech(ctx: _Ctx) -> None:
    if ctx.engine.speech is None:
        raise ApiError(
            404,
            "this server has no speech model: start it with `ccsm serve --model ...`",
            param="model",
            code="model_not_found",
        )


def _speech_job(req: SpeechRequest, speaker: int | None, voice: Any, context: list[Any], seed: int, ctx: _Ctx):
    from ..generator import GenerationSettings, make_sampler
    from ..pipeline import Line, SpeakOptions, speak

    values: dict[str, Any] = {
        k: v for k, v in (("temperature", req.temperature), ("topk", req.topk), ("top_p", req.top_p)) if v is not None
    }
    settings = GenerationSettings(max_audio_ms=req.max_audio_ms, seed=seed, **values)
    try:
        make_sampler(settings)
    except CcsmError as e:
        raise from_ccsm(e) from None
    streaming = req.stream_format is not None
    options = SpeakOptions(pause_ms=req.pause_ms, retries=req.retries, stream=streaming)
    line = Line(req.input, speaker, voice)
    marker = None if streaming else ctx.marker

    def make(lane: Any) -> Iterator[Any]:
        return speak(lane, [line], context=context, settings=settings, options=options, marker=marker)

    return make


def _resolve_voice(ctx: _Ctx, voice: str | int | None) -> tuple[int | None, Any]:
    """``(speaker, saved voice or None)`` of a request's ``voice`` (in a worker thread: file I/O)."""
    speaker = speaker_of(voice)
    if speaker is not None:
        return speaker, None
    assert isinstance(voice, str)
    if not _valid_name(voice) or not ctx.store.path(voice).is_file():
        raise unknown_voice(voice, ctx.store.names())
    try:
        return None, ctx.store.get(voice)
    except CcsmError as e:
        raise from_ccsm(e, "voice") from None


def _valid_name(name: str) -> bool:
    from ..voices import check_name

    try:
        check_name(name)
    except CcsmError:
        return False
    return True


def _context(req: SpeechRequest) -> list[Any]:
    """The request's context turns, their audio decoded (in a worker thread)."""
    from ..generator import Segment

    turns, seconds = [], 0.0
    for i, t in enumerate(req.context):
        wave = context_audio(t, i)
        seconds += len(wave) / encode.RATE
        if seconds > MAX_CONTEXT_SECONDS:
            raise bad(f"the context audio lasts more than {MAX_CONTEXT_SECONDS:g} s together: send less", "context")
        turns.append(Segment(t.speaker, t.text, audio=wave))
    return turns


def _add_speech_routes(app: FastAPI, ctx: _Ctx) -> None:
    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest, request: Request) -> Response:
        _need_speech(ctx)
        check_speech_model(req.model, ctx.model_name)
        check_speech(req, ctx.max_input_chars)
        fmt = req.response_format
        if req.stream_format is not None and fmt not in encode.STREAMABLE:
            raise bad(
                f"{fmt} cannot be streamed: stream pcm, wav, mp3 or opus, or leave out stream_format for {fmt}",
                "stream_format",
            )
        speaker, voice = await run_in_threadpool(_resolve_voice, ctx, req.voice)
        context = await run_in_threadpool(_context, req)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        ticket = _submit(ctx, "speech", _speech_job(req, speaker, voice, context, seed, ctx))
        if req.stream_format is None:
            return await _whole_speech(ctx, ticket, request, fmt)
        return await _streamed_speech(ctx, ticket, request, req, seed)


async def _whole_speech(ctx: _Ctx, ticket: Ticket, request: Request, fmt: str) -> Response:
    from ..pipeline import Finished

    done: Finished | None = None
    async with _Watch(ticket, request):
        async for ev in _events(ctx, ticket):
            if isinstance(ev, Finished):
                done = ev
    if done is None or done.audio is None:
        raise ApiError(500, "internal server error: the speech ended without audio")
    body = await run_in_threadpool(encode.encode_whole, done.audio, fmt)
    headers = {
        "x-ccsm-seed": str(done.seed),
        "x-ccsm-frames": str(len(done.frames)),
        "x-ccsm-watermark": ctx.marker.name if done.watermarked and ctx.marker is not None else "none",
    }
    return Response(body, media_type=encode.CONTENT_TYPES[fmt], headers=headers)


async def _streamed_speech(ctx: _Ctx, ticket: Ticket, request: Request, req: SpeechRequest, seed: int) -> Response:
    """Audio as it is generated (raw chunks, or OpenAI's SSE events); not watermarked."""
    from ..pipeline import Audio, Finished

    watch, events, first = await _begin(ctx, ticket, request)
    encoder = encode.StreamEncoder(req.response_format)
    sse = req.stream_format == "sse"

    def chunk(data: bytes) -> bytes:
        if not sse:
            return data
        return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})

    async def body() -> AsyncIterator[bytes]:
        frames = 0
        try:
            pending = [first] if first is not None else []
            while True:
                ev = pending.pop() if pending else await events.__anext__()
                if isinstance(ev, Audio):
                    data = encoder.push(ev.samples)
                    if data:
                        yield chunk(data)
                elif isinstance(ev, Finished):
                    frames = len(ev.frames)
        except StopAsyncIteration:
            tail = encoder.close()
            if tail:
                yield chunk(tail)
            if sse:
                tokens = len(ctx.engine.speech.generator.tokenizer.encode(req.input))
                usage = {"input_tokens": tokens, "output_tokens": frames, "total_tokens": tokens + frames}
                yield _sse({"type": "speech.audio.done", "usage": usage})
        except ApiError as e:
            log.warning("a streamed speech request ended early: %s", e.message)
            if sse:
                yield _sse({"type": "error", **e.body()})
            else:
                raise
        finally:
            encoder.close()  # (after a cancel: frees the encoder)
            await watch.__aexit__()

    headers = {"x-ccsm-seed": str(seed), "x-ccsm-watermark": "none", "cache-control": "no-store"}
    kind = "text/event-stream" if sse else encode.CONTENT_TYPES[req.response_format]
    return StreamingResponse(body(), media_type=kind, headers=headers)


def _sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


# --------------------------------------------------------------------------------------------
# voices


def _voice_json(v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "speaker": v.speaker,
        "turns": len(v.turns),
        "seconds": round(v.seconds(), 2),
        "model": v.model,
        "created": v.created,
    }


def _add_voice_routes(app: FastAPI, ctx: _Ctx) -> None:
    @app.get("/v1/audio/voices")
    def list_voices() -> dict[str, Any]:
        voices = []
        for _, item in ctx.store.scan():
            if not isinstance(item, CcsmError):
                voices.append(_voice_json(item))
        return {"object": "list", "data": voices}

    @app.post("/v1/audio/voices", status_code=201)
    async def add_voice(
        request: Request,
        name: str = Form(...),
        speaker: int = Form(..., ge=0, le=1_000_000),
        text: list[str] = Form(...),
        audio: list[UploadFile] = File(...),
        replace: bool = Form(False),
    ) -> JSONResponse:
        _need_speech(ctx)
        if not _valid_name(name):
            raise bad(f"{name[:80]!r} cannot name a voice: use 1-64 letters, digits, '-', '_' or '.'", "name")
        if len(text) != len(audio) or not 1 <= len(text) <= MAX_VOICE_TURNS:
            raise bad(
                f"give one text per audio file, 1..{MAX_VOICE_TURNS} of each (got {len(text)} and {len(audio)})",
                "text",
            )
        if not replace and await run_in_threadpool(ctx.store.path(name).exists):
            raise ApiError(409, f"voice {name} exists: send replace=true to replace it", param="name", code="conflict")
        turns = await run_in_threadpool(_voice_turns, text, audio, ctx.max_input_chars)

        def make(lane: Any) -> Iterator[Any]:
            from ..voices import make_voice

            yield make_voice(lane, name, speaker, turns)

        ticket = _submit(ctx, "speech", make)
        voice = None
        async with _Watch(ticket, request):
            async for ev in _events(ctx, ticket):
                voice = ev
        if voice is None:
            raise ApiError(500, "internal server error: no voice was made")
        try:
            await run_in_threadpool(lambda: ctx.store.add(voice, replace=replace))
        except CcsmError as e:
            if "exists" in str(e):
                raise ApiError(409, f"voice {name} exists: send replace=true to replace it", param="name") from None
            raise from_ccsm(e) from None
        return JSONResponse(_voice_json(voice), status_code=201)

    @app.delete("/v1/audio/voices/{name}")
    def delete_voice(name: str) -> dict[str, Any]:
        if not _valid_name(name) or not ctx.store.path(name).exists():
            raise ApiError(404, f"no voice named {name[:80]!r}: GET /v1/audio/voices lists them", param="name")
        try:
            ctx.store.remove(name)
        except CcsmError as e:
            raise from_ccsm(e) from None
        return {"name": name, "object": "voice", "deleted": True}


def _voice_turns(texts: list[str], files: list[UploadFile], max_chars: int) -> list[tuple[str, Any]]:
    turns, seconds = [], 0.0
    for i, (text, up) in enumerate(zip(texts, files)):
        if not text.strip() or len(text) > max_chars:
            raise bad(f"text {i + 1} must be 1..{max_chars} characters: the words spoken in audio {i + 1}", "text")
        data = up.file.read()
        wave = decode_audio(data, f"audio {i + 1} ({up.filename or 'upload'})", "audio", MAX_VOICE_SECONDS)
        seconds += len(wave) / encode.RATE
        if seconds > MAX_VOICE_SECONDS:
            raise bad(f"the recordings last more than {MAX_VOICE_SECONDS:g} s together: send less", "audio")
        turns.append((text, wave))
    return turns


# --------------------------------------------------------------------------------------------
# text


def _need_text(ctx: _Ctx) -> Any:
    if ctx.engine.text is None:
        raise ApiError(
            404,
            "this server has no text model: start it with `ccsm serve --text-model FILE.gguf` (or smollm2)",
            param="model",
            code="model_not_found",
        )
    return ctx.engine.text


def _text_job(prompt: str, settings: Any) -> Callable[[Any], Iterator[Any]]:
    def make(lane: Any) -> Iterator[Any]:
        yield from lane.stream(prompt, settings)
        c = lane.last
        yield _TextDone(c.finish_reason, c.prompt_tokens, len(c.ids))

    return make


def _add_text_routes(app: FastAPI, ctx: _Ctx) -> None:
    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Response:
        from ..textgen import render_chat

        loaded = _need_text(ctx)
        check_text_model(req.model, str(ctx.text_model_name))
        messages = chat_messages(req, ctx.max_input_chars)
        settings = text_settings(req, loaded.tokenizer.vocab_size)
        try:
            prompt = await run_in_threadpool(render_chat, loaded.metadata, loaded.tokenizer, messages)
        except CcsmError as e:
            raise from_ccsm(e, "messages") from None
        return await _complete(ctx, request, prompt, settings, req, chat=True)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Response:
        loaded = _need_text(ctx)
        check_text_model(req.model, str(ctx.text_model_name))
        prompt = completion_prompt(req, ctx.max_input_chars)
        settings = text_settings(req, loaded.tokenizer.vocab_size)
        return await _complete(ctx, request, prompt, settings, req, chat=False)


async def _complete(ctx: _Ctx, request: Request, prompt: str, settings: Any, req: Any, *, chat: bool) -> Response:
    ticket = _submit(ctx, "text", _text_job(prompt, settings))
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = str(ctx.text_model_name)
    if not req.stream:
        pieces: list[str] = []
        done = _TextDone("length", 0, 0)
        async with _Watch(ticket, request):
            async for ev in _events(ctx, ticket):
                if isinstance(ev, str):
                    pieces.append(ev)
                elif isinstance(ev, _TextDone):
                    done = ev
        text = "".join(pieces)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": done.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": _usage(done),
            }
        )
    watch, events, first = await _begin(ctx, ticket, request)
    kind = "chat.completion.chunk" if chat else "text_completion"
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def frame(delta: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        return _sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]})

    async def body() -> AsyncIterator[bytes]:
        try:
            if chat:
                yield frame(None, None, role=True)
            pending = [first] if first is not None else []
            while True:
                ev = pending.pop() if pending else await events.__anext__()
                if isinstance(ev, str):
                    yield frame(ev, None)
                elif isinstance(ev, _TextDone):
                    yield frame(None, ev.finish_reason)
                    if include_usage:
                        yield _sse(
                            {
                                "id": rid,
                                "object": kind,
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": _usage(ev),
                            }
                        )
        except StopAsyncIteration:
            yield b"data: [DONE]\n\n"
        except ApiError as e:
            log.warning("a streamed completion ended early: %s", e.message)
            yield _sse(e.body())
        finally:
            await watch.__aexit__()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-store"})


def _usage(done: _TextDone) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }
