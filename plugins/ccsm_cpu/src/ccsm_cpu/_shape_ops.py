"""Shape ops of `GgmlBackend` (transpose, reshape, slice, pad, concat) on a `GraphBuilder`.

Views stay views where GGML allows it: a reshape, or a contiguous block of a tensor, costs no
copy; a block of a ``zeros`` buffer (a KV cache window) is a view in the buffer's own type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ccsm_core.errors import BUG_HINT, UsageError

from . import _ffi
from ._graph_builder import GraphBuilder
from ._tensor import VIEW, GTensor, axis_of, check_shape, ne, prod, strides

ITEM = {_ffi.F32: 4, _ffi.F16: 2}  # bytes per element of buffer types


def permute(gb: GraphBuilder, p: Any, ndim: int, perm: Sequence[int], cont: bool) -> Any:
    """GGML permute (optionally made contiguous) of a NumPy ``transpose(perm)``."""
    axes = [0, 1, 2, 3]
    for j, src in enumerate(perm):
        axes[ndim - 1 - src] = ndim - 1 - j
    ctx = gb.room()
    out = gb.lib.ggml_permute(ctx, p, *axes)
    return gb.lib.ggml_cont(ctx, out) if cont else out


def transpose(gb: GraphBuilder, x: GTensor, perm: Sequence[int]) -> GTensor:
    n = len(x.shape)
    perm = tuple(int(i) for i in perm)
    if sorted(perm) != list(range(n)):
        raise UsageError(f"transpose: {list(perm)} is not a permutation of {n} axes", BUG_HINT)
    if perm == tuple(range(n)):
        return x
    out = permute(gb, gb.f32(x), n, perm, cont=True)
    return gb.new(out, tuple(x.shape[i] for i in perm), x.base is not None)


def reshape(gb: GraphBuilder, x: GTensor, shape: Sequence[int]) -> GTensor:
    shape = tuple(int(d) for d in shape)
    size = prod(x.shape)
    if shape.count(-1) == 1:
        rest = -prod(shape)
        if rest <= 0 or size % rest:
            raise UsageError(f"reshape: cannot reshape {list(x.shape)} into {list(shape)}", BUG_HINT)
        shape = tuple(size // rest if d == -1 else d for d in shape)
    shape = check_shape(shape, "reshape")
    if prod(shape) != size:
        raise UsageError(f"reshape: cannot reshape {list(x.shape)} into {list(shape)}", BUG_HINT)
    if shape == x.shape:
        return x
    ctx = gb.room()
    out = gb.lib.ggml_reshape_4d(ctx, gb.f32(x), *ne(shape))
    return _view(gb, out, shape, x)


def _view(gb: GraphBuilder, ptr: Any, shape: tuple[int, ...], x: GTensor) -> GTensor:
    if x.base is not None:
        return gb.new(ptr, shape, kind=VIEW, base=x.base)
    return gb.new(ptr, shape)


def slice_(gb: GraphBuilder, x: GTensor, axis: int, start: int, stop: int) -> GTensor:
    shape = x.shape
    axis = axis_of(axis, len(shape), "slice")
    start, stop, _ = slice(int(start), int(stop)).indices(shape[axis])
    if stop <= start:
        raise UsageError(f"slice: [{start}:{stop}] of axis {axis} (size {shape[axis]}) is empty", BUG_HINT)
    if start == 0 and stop == shape[axis]:
        return x
    new = shape[:axis] + (stop - start,) + shape[axis + 1 :]
    ctx, lib = gb.room(), gb.lib
    if x.type in ITEM and x.base is not None and all(d == 1 for d in shape[:axis]):
        # a block of a buffer (a KV cache window): a view in the buffer's own type
        item = ITEM[x.type]
        p = lib.ggml_view_4d(ctx, gb.tensor(x), *ne(new), *strides(new, item), start * item * prod(shape[axis + 1 :]))
        return gb.new(p, new, kind=VIEW, base=x.base, gtype=x.type)
    offset = start * 4 * prod(shape[axis + 1 :])
    if all(d == 1 for d in shape[:axis]):  # a contiguous block: a view with its own strides
        return _view(gb, lib.ggml_view_4d(ctx, gb.f32(x), *ne(new), *strides(new), offset), new, x)
    p = lib.ggml_view_4d(ctx, gb.f32(x), *ne(new), *strides(shape), offset)
    return gb.new(lib.ggml_cont(ctx, p), new, x.base is not None)


def pad(gb: GraphBuilder, x: GTensor, axis: int, left: int, right: int, mode: str = "constant") -> GTensor:
    shape = x.shape
    axis = axis_of(axis, len(shape), "pad")
    left, right = int(left), int(right)
    if left < 0 or right < 0 or max(left, right) >= 2**31:
        raise UsageError(f"pad: widths must be non-negative, got {left}, {right}", BUG_HINT)
    if mode not in ("constant", "replicate"):
        raise UsageError(f"pad: unknown mode {mode!r}", "use 'constant' or 'replicate'")
    if left == right == 0:
        return x
    new = shape[:axis] + (shape[axis] + left + right,) + shape[axis + 1 :]
    g = len(shape) - 1 - axis
    if mode == "constant":
        pads = [0] * 8
        pads[2 * g], pads[2 * g + 1] = left, right
        out = gb.lib.ggml_pad_ext(gb.room(), gb.f32(x), *pads)
        return gb.new(out, new, x.base is not None)
    parts = []
    if left:
        parts.append(_edge(gb, x, axis, 0, left))
    parts.append(x)
    if right:
        parts.append(_edge(gb, x, axis, shape[axis] - 1, right))
    return concat(gb, parts, axis)


def _edge(gb: GraphBuilder, x: GTensor, axis: int, index: int, count: int) -> GTensor:
    """``x[index]`` on ``axis`` repeated ``count`` times."""
    edge = slice_(gb, x, axis, index, index + 1)
    shape = x.shape[:axis] + (count,) + x.shape[axis + 1 :]
    out = gb.lib.ggml_repeat_4d(gb.room(), gb.tensor(edge), *ne(shape))
    return gb.new(out, shape, x.base is not None)


def concat(gb: GraphBuilder, xs: Sequence[GTensor], axis: int) -> GTensor:
    xs = list(xs)
    if not xs:
        raise UsageError("concat: nothing to join", BUG_HINT)
    first = xs[0].shape
    axis = axis_of(axis, len(first), "concat")
    for t in xs[1:]:
        s = t.shape
        if len(s) != len(first) or s[:axis] != first[:axis] or s[axis + 1 :] != first[axis + 1 :]:
            raise UsageError(f"concat: shapes {list(first)} and {list(s)} differ off axis {axis}", BUG_HINT)
    if len(xs) == 1:
        return xs[0]
    dim = len(first) - 1 - axis
    ctx = gb.room(len(xs) + 1)
    out = gb.f32(xs[0])
    total = first[axis]
    for t in xs[1:]:
        out = gb.lib.ggml_concat(ctx, out, gb.f32(t), dim)
        total += t.shape[axis]
    shape = first[:axis] + (total,) + first[axis + 1 :]
    return gb.new(out, shape, any(t.base is not None for t in xs))
