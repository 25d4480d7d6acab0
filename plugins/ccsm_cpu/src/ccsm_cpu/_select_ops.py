"""Selection ops of `GgmlBackend` (top-k, argsort, rows by computed ids, casts) on a `GraphBuilder`.

They let a captured graph pick ids and read rows by them without a trip to the host (CSM's
decoder samples its codes inside one graph per frame, `ccsm_core.models.csm_fused`).
"""

from __future__ import annotations

from ccsm_core.errors import BUG_HINT, UsageError

from . import _ffi
from ._graph_builder import GraphBuilder
from ._tensor import GTensor

I32, F32 = _ffi.I32, _ffi.F32


def _rows(x: GTensor, what: str) -> tuple[int, int]:
    if len(x.shape) != 2 or x.type != F32:
        raise UsageError(f"{what}: need a float [R, N] tensor, got shape {list(x.shape)}", BUG_HINT)
    return x.shape[0], x.shape[1]


def top_k(gb: GraphBuilder, x: GTensor, k: int) -> GTensor:
    """Ids ``[R, k]`` (int) of the ``k`` largest values of each row of ``x [R, N]``, in no order."""
    r, n = _rows(x, "top_k")
    if not 1 <= k <= n:
        raise UsageError(f"top_k: k must be in [1, {n}], got {k}", BUG_HINT)
    out = gb.lib.ggml_top_k(gb.room(), gb.tensor(x), int(k))
    return gb.new(out, (r, int(k)), x.base is not None, gtype=I32)


def argsort(gb: GraphBuilder, x: GTensor, descending: bool = False) -> GTensor:
    """Ids ``[R, N]`` (int) that sort each row of ``x [R, N]``."""
    r, n = _rows(x, "argsort")
    order = _ffi.SORT_DESC if descending else _ffi.SORT_ASC
    out = gb.lib.ggml_argsort(gb.room(), gb.tensor(x), order)
    return gb.new(out, (r, n), x.base is not None, gtype=I32)


def take(gb: GraphBuilder, table: GTensor, ids: GTensor) -> GTensor:
    """Rows ``table[ids]`` ``[n, C]`` of a 2-d tensor or weight, ``ids`` an int tensor ``[n]`` or
    ``[1, n]`` computed by the graph. GGML does not check them: the graph must keep them in
    range (ids from `top_k` or `argsort` of the table's rows are)."""
    if len(table.shape) != 2:
        raise UsageError(f"take: table must be 2-d, got shape {list(table.shape)}", BUG_HINT)
    if ids.type != I32 or not (len(ids.shape) == 1 or (len(ids.shape) == 2 and ids.shape[0] == 1)):
        raise UsageError(f"take: ids must be an int tensor [n] or [1, n], got shape {list(ids.shape)}", BUG_HINT)
    n, c = ids.shape[-1], table.shape[1]
    ctx = gb.room()
    out = gb.lib.ggml_get_rows(ctx, gb.tensor(table), gb.tensor(ids))
    out = gb.lib.ggml_reshape_4d(ctx, out, c, n, 1, 1)
    return gb.new(out, (n, c), table.base is not None or ids.base is not None)


def astype(gb: GraphBuilder, x: GTensor, dtype: str) -> GTensor:
    """``x`` as ``"float32"`` or ``"int32"`` (float to int truncates toward zero)."""
    target = {"float32": F32, "int32": I32}.get(dtype)
    if target is None:
        raise UsageError(f"astype: dtype must be float32 or int32, got {dtype!r}", BUG_HINT)
    if x.type == target:
        return x
    out = gb.lib.ggml_cast(gb.room(), gb.f32(x) if target == I32 else gb.tensor(x), target)
    return gb.new(out, x.shape, x.base is not None, gtype=target)
