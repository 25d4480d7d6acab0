"""A handler's job on the engine: submit it, read its events, cancel it when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import Request

from .context import AppContext
from .engine import Cancelled, QueueFull, Ticket
from .errors import engine_error
from .openai_api import ApiError

DISCONNECT_POLL_S = 0.1


def submit(ctx: AppContext, kind: str, make: Callable[[Any], Iterator[Any]]) -> Ticket:
    """Queue a ``kind`` job (``make(lane)`` yields its events); 503 while stopping, 429 when full."""
    if ctx.engine.stopping:
        raise ApiError(503, "the server is stopping: retry when it is back", code="unavailable")
    try:
        return ctx.engine.submit(kind, make, loop=asyncio.get_running_loop())
    except (QueueFull, Cancelled) as e:
        raise engine_error(ctx, e) from None


class Watch:
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

    async def __aenter__(self) -> Watch:
        self.task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
        self.ticket.cancel()  # no effect once the request has ended


async def job_events(ctx: AppContext, ticket: Ticket) -> AsyncIterator[Any]:
    """The ticket's events; an engine error becomes an `ApiError`."""
    try:
        async for ev in ticket:
            yield ev
    except ApiError:
        raise
    except Exception as e:
        raise engine_error(ctx, e, ticket) from None
