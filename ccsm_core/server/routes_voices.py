"""Saved voices: list, upload (made on the engine) and delete; a request's voice looked up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import CcsmError
from . import encode
from .context import AppContext
from .jobs import Watch, job_events, submit
from .openai_api import ApiError, bad, decode_audio, from_ccsm, speaker_of, unknown_voice

MAX_VOICE_SECONDS = 60.0  # all recordings of one uploaded voice together
MAX_VOICE_TURNS = 16


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a saved voice."""
    from ..voices import check_name

    try:
        check_name(name)
    except CcsmError:
        return False
    return True


def resolve_voice(ctx: AppContext, voice: str | int | None) -> tuple[int | None, Any]:
    """``(speaker, saved voice or None)`` of a request's ``voice`` (in a worker thread: file I/O)."""
    speaker = speaker_of(voice)
    if speaker is not None:
        return speaker, None
    assert isinstance(voice, str)
    if not valid_name(voice) or not ctx.store.path(voice).is_file():
        raise unknown_voice(voice, ctx.store.names())
    try:
        return None, ctx.store.get(voice)
    except CcsmError as e:
        raise from_ccsm(e, "voice") from None


def _voice_json(v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "speaker": v.speaker,
        "turns": len(v.turns),
        "seconds": round(v.seconds(), 2),
        "model": v.model,
        "created": v.created,
    }


def add_voice_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add GET, POST /v1/audio/voices and DELETE /v1/audio/voices/{name} to ``app``."""

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
        ctx.need_speech()
        if not valid_name(name):
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

        ticket = submit(ctx, "speech", make)
        voice = None
        async with Watch(ticket, request):
            async for ev in job_events(ctx, ticket):
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
        if not valid_name(name) or not ctx.store.path(name).exists():
            raise ApiError(404, f"no voice named {name[:80]!r}: GET /v1/audio/voices lists them", param="name")
        try:
            ctx.store.remove(name)
        except CcsmError as e:
            raise from_ccsm(e) from None
        return {"name": name, "object": "voice", "deleted": True}


def _voice_turns(texts: list[str], files: list[UploadFile], max_chars: int) -> list[tuple[str, Any]]:
    """The uploaded recordings decoded, each with its text (in a worker thread)."""
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
