"""Streamed responses: starting one (an error before any output keeps its status) and SSE framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from .context import AppContext
from .engine import Ticket
from .jobs import Watch, job_events


async def open_stream(ctx: AppContext, ticket: Ticket, request: Request) -> tuple[Watch, AsyncIterator[Any], Any]:
    """For a streamed response: watch the client and wait for the first event, so an error
    before any output still gets its own status (the body's generator exits the watch)."""
    watch = Watch(ticket, request)
    await watch.__aenter__()
    events = job_events(ctx, ticket).__aiter__()
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await watch.__aexit__()
        raise
    return watch, events, first


def sse(obj: dict[str, Any]) -> bytes:
    """``obj`` as one server-sent event."""
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()
