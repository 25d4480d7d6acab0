"""POST /v1/chat/completions and /v1/completions: whole JSON answers or SSE chunks."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import CcsmError
from .context import AppContext
from .jobs import Watch, job_events, submit
from .openai_api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    chat_messages,
    check_text_model,
    completion_prompt,
    from_ccsm,
    text_settings,
)
from .streaming import open_stream, sse

log = logging.getLogger("ccsm.server")


@dataclass(frozen=True)
class _TextDone:
    """The last event of a text job: why it ended and the token counts."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def add_text_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add POST /v1/chat/completions and /v1/completions to ``app``."""

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Response:
        from ..textgen import render_chat

        loaded = ctx.need_text()
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
        loaded = ctx.need_text()
        check_text_model(req.model, str(ctx.text_model_name))
        prompt = completion_prompt(req, ctx.max_input_chars)
        settings = text_settings(req, loaded.tokenizer.vocab_size)
        return await _complete(ctx, request, prompt, settings, req, chat=False)


def _text_job(prompt: str, settings: Any) -> Callable[[Any], Iterator[Any]]:
    """The engine job completing ``prompt``: its text pieces, then a `_TextDone`."""

    def make(lane: Any) -> Iterator[Any]:
        yield from lane.stream(prompt, settings)
        c = lane.last
        yield _TextDone(c.finish_reason, c.prompt_tokens, len(c.ids))

    return make


async def _complete(ctx: AppContext, request: Request, prompt: str, settings: Any, req: Any, *, chat: bool) -> Response:
    ticket = submit(ctx, "text", _text_job(prompt, settings))
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = str(ctx.text_model_name)
    if not req.stream:
        pieces: list[str] = []
        done = _TextDone("length", 0, 0)
        async with Watch(ticket, request):
            async for ev in job_events(ctx, ticket):
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
    watch, events, first = await open_stream(ctx, ticket, request)
    kind = "chat.completion.chunk" if chat else "text_completion"
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def frame(delta: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        return sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]})

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
                        yield sse(
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
            yield sse(e.body())
        finally:
            await watch.__aexit__()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-store"})


def _usage(done: _TextDone) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }
