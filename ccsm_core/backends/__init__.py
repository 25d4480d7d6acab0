"""Compute backends: the contract (`base.Backend`) and how to pick one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable
from ..plugin_code import SigintWatch, guarded, reason
from .base import OPS, Backend

if TYPE_CHECKING:
    from ..specs import BackendSpec

__all__ = ["Backend", "OPS", "get_backend", "backend_status", "backend_details", "default_backend_name"]


def backend_status(entry: BackendSpec) -> str | None:
    """``None`` if the registered backend can run here, else the reason it cannot (a check that
    raises anything, ``SystemExit`` included, gives its error as the reason)."""
    return _ask(entry.available)


def backend_details(entry: BackendSpec) -> str | None:
    """What the backend's ``describe()`` says (threads, SIMD, devices), or its error in brackets."""
    if entry.describe is None:
        return None
    try:
        with guarded(entry.plugin, f"backend {entry.name!r}'s describe()"):
            return " ".join(str(entry.describe()).split())
    except BackendUnavailable as e:
        return f"({e})"
    except Exception as e:  # a broken description is shown, not fatal
        return f"({reason(e)})"


def _ask(check: Any) -> str | None:
    if check is None:
        return None
    with SigintWatch() as watch:
        try:
            answer = check()
        except BaseException as e:  # a broken check is a reason, not a crash
            if watch.passes(e):
                raise
            return reason(e)
    if answer is None:
        return None
    if not isinstance(answer, str):
        return f"its available() returned {type(answer).__name__}, not a reason or None"
    return " ".join(answer.split()) or "unavailable (no reason given)"


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
    why = backend_status(entry)
    if why is not None:
        raise BackendUnavailable(
            f"backend {entry.name!r} is not available here: {why}",
            "run `ccsm backends` to see which backends can run",
        )
    call = guarded(entry.plugin, f"the factory of backend {entry.name!r}")
    with call:
        backend = entry.factory(**options)
    missing = [op for op in OPS if not callable(getattr(backend, op, None))] if backend is not None else []
    if backend is None or missing:
        got = "returned None" if backend is None else f"returned {type(backend).__name__}, which lacks {missing[0]}()"
        raise call.fail(f"{got} instead of a backend")
    return backend
