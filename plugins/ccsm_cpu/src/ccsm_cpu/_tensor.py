"""The tensor handle of the GGML backend and small shape helpers (pure Python)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ccsm_core.errors import BUG_HINT, UsageError

PERSIST = -1  # epoch of tensors that live as long as the backend (weights, buffers)
STALE = -2  # epoch of host-backed handles not yet placed in the current graph

# kinds of handle
TEMP, HOST, WEIGHT, BUFFER, VIEW = range(5)
KIND_NAMES = ("temp", "host", "weight", "buffer", "view")
MAX_DIMS = 4


class GTensor:
    """A lazy GGML tensor: ``shape`` (NumPy order), GGML ``type`` and where its value lives.

    ``ptr`` is a ``ggml_tensor *`` valid in ``epoch`` (the backend's current evaluation, or
    `PERSIST`). ``host`` holds the value once computed (or given by ``asarray``). ``base`` is the
    persistent buffer handle this tensor views or writes, if any.
    """

    __slots__ = ("ptr", "shape", "type", "epoch", "host", "base", "kind", "owner", "half", "__weakref__")

    def __init__(
        self,
        ptr: Any,
        shape: tuple[int, ...],
        gtype: int,
        epoch: int,
        host: Any,
        base: GTensor | None,
        kind: int,
        owner: Any,
    ) -> None:
        self.ptr, self.shape, self.type, self.epoch = ptr, shape, gtype, epoch
        self.host, self.base, self.kind, self.owner = host, base, kind, owner
        self.half: Any = None  # (epoch, f16 copy) of a mask, made once per graph

    def __repr__(self) -> str:
        return f"GTensor(shape={self.shape}, type={self.type}, kind={KIND_NAMES[self.kind]})"


def ne(shape: tuple[int, ...]) -> tuple[int, ...]:
    """GGML ``ne`` (4 dims, reversed) of a NumPy shape."""
    return tuple(reversed(shape)) + (1,) * (MAX_DIMS - len(shape))


def strides(shape: tuple[int, ...], item: int = 4) -> tuple[int, int, int]:
    """GGML ``nb1, nb2, nb3`` of a contiguous tensor of ``shape`` with ``item``-byte elements."""
    n0, n1, n2, _ = ne(shape)
    nb1 = item * n0
    return nb1, nb1 * n1, nb1 * n1 * n2


def axis_of(axis: int, ndim: int, what: str) -> int:
    """Normalise a NumPy axis (negative allowed); `UsageError` if out of range."""
    if not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise UsageError(f"{what}: axis {axis!r} is out of range for a {ndim}-d tensor", BUG_HINT)
    return axis + ndim if axis < 0 else axis


def check_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    """A validated shape: 0 to 4 positive ints."""
    try:
        out = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise UsageError(f"{what}: shape {shape!r} is not a sequence of ints", BUG_HINT) from None
    if len(out) > MAX_DIMS:
        raise UsageError(f"{what}: {len(out)}-d tensors are not supported (GGML has at most {MAX_DIMS} dims)", BUG_HINT)
    if any(d <= 0 for d in out):
        raise UsageError(f"{what}: shape {list(out)} has an empty or negative dimension", BUG_HINT)
    return out


def broadcast(sa: tuple[int, ...], sb: tuple[int, ...], what: str) -> tuple[int, ...]:
    """NumPy broadcasting of two shapes; `UsageError` if they do not broadcast."""
    n = max(len(sa), len(sb))
    a = (1,) * (n - len(sa)) + sa
    b = (1,) * (n - len(sb)) + sb
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise UsageError(f"{what}: shapes {list(sa)} and {list(sb)} do not broadcast", BUG_HINT)
        out.append(x if y == 1 else y)
    return tuple(out)


def prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
