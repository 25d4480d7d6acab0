"""POST /v1/audio/speech: speech as a whole file (watermarked) or streamed (raw chunks or SSE)."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import CcsmError
from . import encode
from .context import AppContext
from .engine import Ticket
from .jobs import Watch, job_events, submit
from .openai_api import (
    MAX_CONTEXT_SECONDS,
    ApiError,
    SpeechRequest,
    bad,
    check_speech,
    check_speech_model,
    context_audio,
    from_ccsm,
)
from .routes_voices import resolve_voice
from .streaming import open_stream, sse

log = logging.getLogger("ccsm.server")


def add_speech_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add POST /v1/audio/speech to ``app``."""

    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest, request: Request) -> Response:
        ctx.need_speech()
        check_speech_model(req.model, ctx.model_name)
        check_speech(req, ctx.max_input_chars)
        fmt = req.response_format
        if req.stream_format is not None and fmt not in encode.STREAMABLE:
            raise bad(
                f"{fmt} cannot be streamed: stream pcm, wav, mp3 or opus, or leave out stream_format for {fmt}",
                "stream_format",
            )
        speaker, voice = await run_in_threadpool(resolve_voice, ctx, req.voice)
        context = await run_in_threadpool(_context_turns, req)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        ticket = submit(ctx, "speech", _speech_job(req, speaker, voice, context, seed, ctx))
        if req.stream_format is None:
            return await _whole_speech(ctx, ticket, request, fmt)
        return await _streamed_speech(ctx, ticket, request, req, seed)


def _context_turns(req: SpeechRequest) -> list[Any]:
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


def _speech_job(
    req: SpeechRequest, speaker: int | None, voice: Any, context: list[Any], seed: int, ctx: AppContext
) -> Callable[[Any], Iterator[Any]]:
    """The engine job speaking ``req`` (watermarked, a stream block by block)."""
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
    marker = ctx.marker

    def make(lane: Any) -> Iterator[Any]:
        return speak(lane, [line], context=context, settings=settings, options=options, marker=marker)

    return make


async def _whole_speech(ctx: AppContext, ticket: Ticket, request: Request, fmt: str) -> Response:
    from ..pipeline import Finished

    done: Finished | None = None
    async with Watch(ticket, request):
        async for ev in job_events(ctx, ticket):
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


async def _streamed_speech(
    ctx: AppContext, ticket: Ticket, request: Request, req: SpeechRequest, seed: int
) -> Response:
    """Audio as it is generated (raw chunks, or OpenAI's SSE events); watermarked block by block."""
    from ..pipeline import Audio, Finished

    watch, events, first = await open_stream(ctx, ticket, request)
    encoder = encode.StreamEncoder(req.response_format)
    sse_mode = req.stream_format == "sse"

    def chunk(data: bytes) -> bytes:
        if not sse_mode:
            return data
        return sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})

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
            if sse_mode:
                tokens = len(ctx.engine.speech.generator.tokenizer.encode(req.input))
                usage = {"input_tokens": tokens, "output_tokens": frames, "total_tokens": tokens + frames}
                yield sse({"type": "speech.audio.done", "usage": usage})
        except ApiError as e:
            log.warning("a streamed speech request ended early: %s", e.message)
            if sse_mode:
                yield sse({"type": "error", **e.body()})
            else:
                raise
        finally:
            encoder.close()  # (after a cancel: frees the encoder)
            await watch.__aexit__()

    mark = ctx.marker.name if ctx.marker is not None and getattr(ctx.marker.marker, "stream", None) else "none"
    headers = {"x-ccsm-seed": str(seed), "x-ccsm-watermark": mark, "cache-control": "no-store"}
    kind = "text/event-stream" if sse_mode else encode.CONTENT_TYPES[req.response_format]
    return StreamingResponse(body(), media_type=kind, headers=headers)
