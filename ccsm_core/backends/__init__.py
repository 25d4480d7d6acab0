"""Compute backends: the contract (`base.Backend`) and how to pick one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable
from .base import OPS, Backend

if TYPE_CHECKING:
    from ..specs import BackendSpec

__all__ = ["Backend", "OPS", "get_backend", "backend_status", "default_backend_name"]


def backend_status(entry: BackendSpec) -> str | None:
    """``None`` if the registered backend can run here, else the reason it cannot."""
    check = entry.available
    if check is None:
        return None
    try:
        return check()
    except Exception as e:  # a broken check is a reason, not a crash
        return f"{type(e).__name__}: {e}"


def default_backend_name() -> str:
    """The available backend with the highest priority (ties: registration order)."""
    from ..plugins import registry

    usable = [e for e in registry("backends") if not e.conflict_with and backend_status(e) is None]
    if not usable:
        raise BackendUnavailable("no compute backend is available", "reinstall ccsm; numpy is built in")
    return max(usable, key=lambda e: e.priority).name


def get_backend(name: str | None = None, **options: Any) -> Backend:
    """Create the backend called ``name`` (default: best available) with backend ``options``."""
    from ..plugins import registry

    entry = registry("backends").get(name or default_backend_name())
    reason = backend_status(entry)
    if reason is not None:
        raise BackendUnavailable(
            f"backend {entry.name!r} is not available here: {reason}",
            "run `ccsm backends` to see which backends can run",
        )
    return entry.factory(**options)
