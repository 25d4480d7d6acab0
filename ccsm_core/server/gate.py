"""The gate in front of every route: request id, API key, body size and the access log."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException

from .context import AppContext
from .openai_api import ApiError, bad

OPEN_PATHS = ("/", "/health", "/favicon.ico")  # and /static/...: no API key needed
REQUEST_ID_KEY = "ccsm.request_id"  # the scope key holding a request's id
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

access_log = logging.getLogger("ccsm.access")


class Gate:
    """Pure ASGI middleware in front of every route (streaming-safe)."""

    def __init__(self, app: Any, ctx: AppContext) -> None:
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
