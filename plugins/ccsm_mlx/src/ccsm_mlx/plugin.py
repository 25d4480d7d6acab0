"""Registers the ``mlx`` backend and the ``ccsm mlx`` commands. Imports only ``ccsm_core``:
MLX is imported when the backend is created or its availability is asked for."""

from __future__ import annotations

import sys
from typing import Any

from ccsm_core import hookimpl

PIN = "mlx>=0.32,<0.33"
# On macOS MLX runs on the Metal GPU and is preferred over NumPy; on Linux its CPU build (netlib
# BLAS, one thread) measured 6x slower than NumPy at the real CSM-1B shape (README), so there it
# is used only when asked for (--backend mlx).
PRIORITY = 5 if sys.platform == "darwin" else -1
_reason: list[str | None] = []  # memo of the availability check


def _available() -> str | None:
    """``None`` if ``mlx.core`` imports (in the tested range) and computes, else the reason."""
    if _reason:
        return _reason[0]
    reason = None
    try:
        import mlx.core as mx

        version: str = mx.__version__  # type: ignore[attr-defined]  # mlx's stubs lack __version__
        major_minor = tuple(int(p) for p in version.split(".")[:2])
        if major_minor != (0, 32):
            reason = f"mlx {version} is outside the tested range ({PIN})"
        else:
            mx.eval(mx.array([1.0]) + 1.0)
    except ImportError as e:
        reason = f"mlx not importable: {e} (pip install 'mlx[cpu]>=0.32,<0.33' on Linux, 'mlx>=0.32,<0.33' on macOS)"
    except Exception as e:  # a broken install: say what broke
        reason = f"mlx does not work here: {type(e).__name__}: {e}"
    _reason.append(" ".join(str(reason).split()) if reason else None)
    return _reason[0]


def factory(**options: Any) -> Any:
    """``MlxBackend(dtype=, quantize=, group_size=, device=, cache=, cache_dir=, progress=)``."""
    from ccsm_core.errors import UsageError

    from .backend import OPTIONS, MlxBackend

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"mlx backend: unknown option(s) {', '.join(unknown)}", "known: " + ", ".join(OPTIONS))
    return MlxBackend(**options)


@hookimpl
def register_backends(register: Any) -> None:
    register(
        "mlx",
        factory,
        priority=PRIORITY,
        available=_available,
        devices=("cpu", "gpu"),
        batching=False,  # a batch of streams (CSM frames, Mimi decoding) is computed one stream after another
        summary="MLX lazy arrays (Metal on Apple Silicon, CPU elsewhere); f32/f16/bf16, 4/8-bit",
    )


@hookimpl
def register_commands(cli: Any) -> None:
    from .commands import mlx_group

    cli.add_command(mlx_group)
