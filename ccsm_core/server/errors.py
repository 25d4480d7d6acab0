"""Errors as OpenAI-shaped JSON: the app's exception handlers and the engine's errors as HTTP errors."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..errors import CcsmError
from .context import AppContext
from .engine import Cancelled, QueueFull, Ticket
from .gate import REQUEST_ID_KEY
from .openai_api import ApiError, bad, from_ccsm, validation_message

log = logging.getLogger("ccsm.server")


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def add_error_handlers(app: FastAPI) -> None:
    """Every error ``app`` raises answered in OpenAI's shape (a bug's traceback stays in the log)."""

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


def engine_error(ctx: AppContext, e: BaseException, ticket: Ticket | None = None) -> ApiError:
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
