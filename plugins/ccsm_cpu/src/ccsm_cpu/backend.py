"""GgmlBackend: the ccsm lazy tensor contract on GGML graphs (CPU).

How it works:

- Each op adds a node to the current *epoch* (`ccsm_cpu._graph_builder.GraphBuilder`): tensor
  metadata lives in reusable no-alloc contexts; nothing is computed until ``to_numpy``.
- ``to_numpy`` builds one graph from (1) every pending buffer write and buffer read, in program
  order, (2) every handle of this epoch that Python still holds, then allocates it with
  ``ggml_gallocr`` (memory reused across nodes and evaluations) and computes it on the CPU
  backend with ``threads`` threads.
- After computing, held handles keep their values on the host (small: a model keeps a few);
  buffer handles point at their persistent buffer again; the epoch's contexts are reset.
- Weights and ``zeros`` buffers are persistent (`ccsm_cpu._persistent_memory.PersistentMemory`):
  their data is host memory we own or the caller's (mapped) array, attached with
  ``ggml_backend_cpu_buffer_from_ptr`` (no copy when the array is aligned and contiguous).

Shapes and arguments are validated here before any ggml call: ggml aborts the process on a
failed assertion. Shape ops are in `_shape_ops`, convolutions in `_conv`, capture in `_capture`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ccsm_core.errors import BUG_HINT, CcsmError, UsageError

from . import _attention, _conv, _ffi, _load, _select_ops, _shape_ops
from ._graph_builder import GraphBuilder
from ._persistent_memory import PersistentMemory
from ._persistent_memory import aligned as _aligned  # noqa: F401  (tests import it from here)
from ._tensor import BUFFER, HOST, PERSIST, STALE, WEIGHT, GTensor, axis_of, broadcast, check_shape, ne, prod, strides
from .lib import GgmlError, Owned, check_status, load

F32, I32 = _ffi.F32, _ffi.I32
_SET_MAX_OFFSET = 1 << 30  # ggml_set asserts offset < 2^30
_BUFFER_TYPES = {"float32": F32, "float16": _ffi.F16}  # zeros(dtype=...)
_FLOAT_WEIGHTS = (F32, _ffi.F16, _ffi.BF16)
_GEMM_ROWS = 4  # rows GGML's repacked kernels multiply together (the rest go one by one)
_ROW_EXACT_GEMM = ("Q4_0",)  # repacked types whose 4-row kernel gives each row its result alone
MIN_PARALLEL_WORK = 1 << 21  # multiply-adds below which a graph runs on one thread


class GgmlBackend:
    """`ccsm_core.backends.base.Backend` on GGML (CPU). Not thread-safe: one caller at a time.

    It composes ``builder`` (the graph under construction and its evaluation) and ``memory``
    (weights, buffers and what is derived from them), and computes graphs on ggml's CPU backend."""

    name = "ggml-cpu"

    def __init__(
        self,
        threads: int | None = None,
        min_parallel_work: int = MIN_PARALLEL_WORK,
        repack: bool = True,
        huge_pages: bool = False,
        **options: Any,
    ) -> None:
        """``threads``: compute threads (default: as many as this process's cores, fewer while
        other processes keep some of them busy: `ccsm_cpu._load.IdleCores`; a number given here
        is used as it is). ``min_parallel_work``:
        graphs with fewer multiply-adds run on one thread (thread hand-offs at every node cost
        more than they save on small graphs, and much more on a busy machine). ``repack``:
        multiply Q4_0/Q4_K weights through GGML's interleaved (repacked) copies where the CPU
        has kernels for them (x86 AVX2: about 1.5x faster matrix-vector products). ``huge_pages``:
        copy the weights into transparent huge pages where Linux provides them (fewer TLB misses,
        at the price of load time and of every weight resident: `ccsm_cpu._huge_pages`; off by
        default, memory-mapped weights stay in place)."""
        if options:
            raise UsageError(
                f"ggml-cpu: unknown option(s) {', '.join(sorted(options))}",
                "known: threads, min_parallel_work, repack, huge_pages",
            )
        for name, flag in (("repack", repack), ("huge_pages", huge_pages)):
            if not isinstance(flag, bool):
                raise UsageError(f"ggml-cpu: {name} must be true or false, got {flag!r}", f"pass {name}=true or false")
        n = _load.usable_cores() if threads is None else threads
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 512:
            raise UsageError(
                f"ggml-cpu: threads must be an int in 1..512, got {threads!r}",
                "pass --threads N with N from 1 to 512",
            )
        if not isinstance(min_parallel_work, int) or min_parallel_work < 0:
            raise UsageError(
                f"ggml-cpu: min_parallel_work must be an int >= 0, got {min_parallel_work!r}",
                "pass --backend-option min_parallel_work=N with N >= 0",
            )
        self.threads, self.min_parallel_work = n, min_parallel_work
        self.idle_cores = _load.IdleCores(n) if threads is None else None
        self._n_threads = n
        g = self._g = load()
        self._ffi, self._lib = g.ffi, g.lib
        lib = self._lib
        be = lib.ggml_backend_cpu_init()
        if be == self._ffi.NULL:
            raise GgmlError("ggml_backend_cpu_init failed", "free some memory")
        self._backend = Owned(be, lib.ggml_backend_free)
        lib.ggml_backend_cpu_set_n_threads(be, n)
        self.memory = PersistentMemory(g, repack, huge_pages)
        try:
            self.builder = GraphBuilder(g, self, self.memory)
        except BaseException:
            self._backend.close()
            raise
        self._closed = False
        self._stats = {"evaluations": 0, "graph_nodes": 0, "compute_s": 0.0, "eval_s": 0.0}
        gb = self.builder  # its methods used by every op
        self._room, self._new, self._p, self._pf, self._index = gb.room, gb.new, gb.tensor, gb.f32, gb.index

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Free every ggml object; handles of this backend become unusable."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.builder.close()
        self._backend.close()
        self.memory.close()

    def __enter__(self) -> GgmlBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def stats(self) -> dict[str, float]:
        """Cumulative counters: evaluations, graph nodes computed, seconds inside ggml's compute
        (``compute_s``) and in whole evaluations including graph building (``eval_s``), and the
        threads the last computation used (``threads``)."""
        return {**self._stats, "threads": self._n_threads}

    def count_eval_time(self, seconds: float) -> None:
        """Add ``seconds`` spent in an evaluation outside `compute_graph` to ``stats()["eval_s"]``."""
        self._stats["eval_s"] += seconds

    def compute_graph(self, graph: Any, work: int, what: str, nodes: int | None = None) -> None:
        """Compute an allocated ``graph`` of ``work`` multiply-adds: on one thread below
        ``min_parallel_work``, else on ``threads`` (fewer while other processes keep cores busy,
        where the count was left to us); counted in `stats`."""
        lib = self._lib
        n = (
            1
            if work < self.min_parallel_work
            else (self.idle_cores.threads() if self.idle_cores is not None else self.threads)
        )
        if n != self._n_threads:
            lib.ggml_backend_cpu_set_n_threads(self._backend.handle, n)
            self._n_threads = n
        t0 = time.perf_counter()
        status = lib.ggml_backend_graph_compute(self._backend.handle, graph)
        st = self._stats
        st["compute_s"] += time.perf_counter() - t0
        check_status(self._g, status, what)
        st["evaluations"] += 1
        st["graph_nodes"] += lib.ggml_graph_n_nodes(graph) if nodes is None else nodes

    def _evaluate(self, out: GTensor | None = None) -> None:
        """Compute every pending write/read and every held handle (and ``out``); a new epoch."""
        start = time.perf_counter()
        try:
            self.builder.evaluate(out, self.compute_graph)
        finally:
            self._stats["eval_s"] += time.perf_counter() - start

    def flush(self) -> None:
        """Compute pending buffer writes (and the reads among them) now, if there are any."""
        if self.builder.pending():
            self._evaluate()

    # -- data in and out -----------------------------------------------------------------
    def asarray(self, a: np.ndarray) -> GTensor:
        a = np.asarray(a)
        if a.dtype.kind in "iub":
            if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
                raise UsageError("ggml-cpu: integer input does not fit int32", BUG_HINT)
            arr, gtype = np.array(a, np.int32, order="C"), I32
        elif a.dtype.kind == "f":
            arr, gtype = np.array(a, np.float32, order="C"), F32
        else:
            raise UsageError(f"ggml-cpu: cannot make a tensor of dtype {a.dtype}", BUG_HINT)
        shape = check_shape(arr.shape, "asarray")
        return GTensor(None, shape, gtype, STALE, arr, None, HOST, self)

    def weight(self, t: Any) -> GTensor:
        ptr, shape, gtype = self.memory.weight(t)
        return GTensor(ptr, shape, gtype, PERSIST, None, None, WEIGHT, self)

    def capture(self, fn: Any, *examples: np.ndarray) -> Any:
        """Build ``fn``'s graph once; the result replays it: ``captured(*arrays) -> [np.ndarray]``.

        For steps whose shapes, weights and buffer offsets never change (see `_capture`)."""
        from ._capture import Captured

        return Captured(self, fn, examples)

    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> GTensor:
        shape = check_shape(shape, "zeros")
        gtype = _BUFFER_TYPES.get(dtype)
        if gtype is None:
            raise UsageError(
                f"ggml-cpu: zeros() dtype must be one of {', '.join(_BUFFER_TYPES)}, got {dtype!r}",
                BUG_HINT,
            )
        ptr = self.memory.buffer(gtype, shape, _shape_ops.ITEM[gtype])
        h = GTensor(ptr, shape, gtype, PERSIST, None, None, BUFFER, self)
        h.base = h
        return h

    def write(self, buf: GTensor, x: GTensor, start: Any, axis: int = 0) -> GTensor:
        if getattr(buf, "kind", None) != BUFFER:
            raise UsageError("ggml-cpu: write() needs a buffer from zeros() or an earlier write()", BUG_HINT)
        bs, xs = buf.shape, x.shape
        if axis != 0:
            axis = axis_of(axis, len(bs), "write")
        if len(xs) != len(bs) or xs[:axis] != bs[:axis] or xs[axis + 1 :] != bs[axis + 1 :]:
            raise UsageError(f"ggml-cpu: cannot write shape {list(xs)} into {list(bs)} along axis {axis}", BUG_HINT)
        if isinstance(start, GTensor):
            return self._write_rows(buf, x, start, axis)
        if not isinstance(start, (int, np.integer)) or start < 0 or start + xs[axis] > bs[axis]:
            raise UsageError(
                f"ggml-cpu: write of {xs[axis]} rows at {start} exceeds axis {axis} of size {bs[axis]}",
                BUG_HINT,
            )
        if buf.type != F32:
            rows = np.arange(int(start), int(start) + xs[axis], dtype=np.int32)
            return self._write_rows(buf, x, self.asarray(rows), axis)
        offset = int(start) * 4 * prod(bs[axis + 1 :])
        if offset >= _SET_MAX_OFFSET:
            raise UsageError(f"ggml-cpu: write offset {offset} bytes exceeds ggml's limit of 1 GiB", BUG_HINT)
        px = self._pf(x)
        pb = self._p(buf)
        out = self._lib.ggml_set_inplace(self._room(), pb, px, *strides(bs), offset)
        return self._new(out, bs, True, kind=BUFFER, base=buf.base)

    def _write_rows(self, buf: GTensor, x: GTensor, start: GTensor, axis: int) -> GTensor:
        """Write ``x`` at the rows ``start[0], start[0]+1, ...`` (an int tensor: one row index per
        row of ``x``), so a captured step can write at a row that changes between replays."""
        bs, xs = buf.shape, x.shape
        if axis != 0:
            raise UsageError("ggml-cpu: writes at tensor-given rows (or into float16 buffers) need axis 0", BUG_HINT)
        if start.type != I32 or start.shape != (xs[0],):
            raise UsageError(
                f"ggml-cpu: write rows must be an int tensor of shape [{xs[0]}], got shape {list(start.shape)}",
                BUG_HINT,
            )
        if start.host is not None and (start.host.min() < 0 or start.host.max() >= bs[0]):
            raise UsageError(
                f"ggml-cpu: write rows {start.host.min()}..{start.host.max()} exceed axis 0 of size {bs[0]}",
                BUG_HINT,
            )
        lib, ctx = self._lib, self._room()
        inner = prod(bs[1:])
        dst = lib.ggml_reshape_4d(ctx, self._p(buf), inner, bs[0], 1, 1)
        src = lib.ggml_reshape_4d(ctx, self._pf(x), inner, xs[0], 1, 1)
        out = lib.ggml_set_rows(ctx, dst, src, self._index(start, bs[0]))
        out = lib.ggml_reshape_4d(ctx, out, *ne(bs))
        return self._new(out, bs, True, kind=BUFFER, base=buf.base, gtype=buf.type)

    def to_numpy(self, x: GTensor) -> np.ndarray:
        if getattr(x, "owner", None) is not self:
            raise UsageError("ggml-cpu: to_numpy() needs a tensor of this backend", BUG_HINT)
        if x.host is not None:
            return x.host.copy()
        if x.type != F32 and x.type != I32:  # a weight or half-precision buffer: to f32 in a graph
            x = self._new(self._pf(x), x.shape, x.base is not None)
        if x.epoch == PERSIST:
            if self.builder.pending():  # pending writes may change it
                self._evaluate()
            return self.builder.read(x.ptr, x.shape)
        if x.epoch != self.builder.epoch:
            raise CcsmError("ggml-cpu: this tensor was lost when an evaluation failed", "recompute it")
        self._evaluate(x)
        return x.host.copy() if x.host is not None else self.builder.read(x.ptr, x.shape)

    def shape(self, x: GTensor) -> tuple[int, ...]:
        return x.shape

    # -- elementwise and reductions ------------------------------------------------------
    def _binary(self, fn: Any, a: GTensor, b: GTensor, what: str) -> GTensor:
        ctx = self._room()
        pa, pb = self._pf(a), self._pf(b)
        sa, sb = a.shape, b.shape
        if sa == sb:
            shape = sa
            out = fn(ctx, pa, pb)
        else:
            shape = broadcast(sa, sb, what)
            no = ne(shape)
            if ne(sa) == no:
                out = fn(ctx, pa, pb)
            elif ne(sb) == no:
                out = fn(ctx, pb, pa)
            else:
                out = fn(ctx, self._lib.ggml_repeat_4d(ctx, pa, *no), pb)
        return self._new(out, shape, a.base is not None or b.base is not None)

    def add(self, a: GTensor, b: GTensor) -> GTensor:
        return self._binary(self._lib.ggml_add, a, b, "add")

    def mul(self, a: GTensor, b: GTensor) -> GTensor:
        return self._binary(self._lib.ggml_mul, a, b, "mul")

    def scale(self, x: GTensor, s: float) -> GTensor:
        ctx = self._room()
        return self._new(self._lib.ggml_scale(ctx, self._pf(x), float(s)), x.shape, x.base is not None)

    def _unary(self, fn: Any, x: GTensor) -> GTensor:
        ctx = self._room()
        return self._new(fn(ctx, self._pf(x)), x.shape, x.base is not None)

    def silu(self, x: GTensor) -> GTensor:
        return self._unary(self._lib.ggml_silu, x)

    def swiglu(self, gate: GTensor, up: GTensor) -> GTensor:
        if gate.shape != up.shape:
            raise UsageError(f"swiglu: gate {list(gate.shape)} and up {list(up.shape)} differ", BUG_HINT)
        out = self._lib.ggml_swiglu_split(self._room(), self._pf(gate), self._pf(up))
        return self._new(out, gate.shape, gate.base is not None or up.base is not None)

    def gelu(self, x: GTensor, approximate: bool = False) -> GTensor:
        if not approximate:
            return self._unary(self._lib.ggml_gelu_erf, x)
        # tanh form from primitives: ggml_gelu reads an fp16 table (about 1e-3 relative error)
        lib, ctx, p = self._lib, self._room(), self._pf(x)
        c = math.sqrt(2.0 / math.pi)
        inner = lib.ggml_mul(ctx, p, lib.ggml_scale_bias(ctx, lib.ggml_sqr(ctx, p), 0.044715 * c, c))
        out = lib.ggml_mul(
            ctx, lib.ggml_scale(ctx, p, 0.5), lib.ggml_scale_bias(ctx, lib.ggml_tanh(ctx, inner), 1.0, 1.0)
        )
        return self._new(out, x.shape, x.base is not None)

    def elu(self, x: GTensor, alpha: float = 1.0) -> GTensor:
        if alpha == 1.0:
            # relu(x) + (exp(x - relu(x)) - 1): ggml's ELU calls expm1f per element (about 3x
            # slower than its expf); the difference is below 1e-7 absolute and x > 0 passes
            # exactly. (ggml_clamp would give min(x, 0) in one node, but it writes in place.)
            lib, ctx, p = self._lib, self._room(), self._pf(x)
            pos = lib.ggml_relu(ctx, p)
            neg = lib.ggml_add(ctx, p, lib.ggml_scale(ctx, pos, -1.0))
            em1 = lib.ggml_scale_bias(ctx, self._lib.ggml_exp(ctx, neg), 1.0, -1.0)
            return self._new(lib.ggml_add(ctx, pos, em1), x.shape, x.base is not None)
        lib, ctx, p = self._lib, self._room(), self._pf(x)
        # alpha*elu(x) + (1-alpha)*relu(x) equals x for x > 0 and alpha*expm1(x) otherwise
        out = lib.ggml_add(
            ctx,
            lib.ggml_scale(ctx, lib.ggml_elu(ctx, p), float(alpha)),
            lib.ggml_scale(ctx, lib.ggml_relu(ctx, p), float(1.0 - alpha)),
        )
        return self._new(out, x.shape, x.base is not None)

    def softmax(self, x: GTensor) -> GTensor:
        ctx = self._room()
        out = self._lib.ggml_soft_max_ext(ctx, self._pf(x), self._ffi.NULL, 1.0, 0.0)
        return self._new(out, x.shape, x.base is not None)

    def sum(self, x: GTensor, axis: int) -> GTensor:
        shape = x.shape
        axis = axis_of(axis, len(shape), "sum")
        ctx = self._room()
        p = self._pf(x)
        if axis != len(shape) - 1:
            perm = [i for i in range(len(shape)) if i != axis] + [axis]
            p = _shape_ops.permute(self.builder, p, len(shape), perm, cont=True)
        out_shape = shape[:axis] + shape[axis + 1 :]
        out = self._lib.ggml_reshape_4d(ctx, self._lib.ggml_sum_rows(ctx, p), *ne(out_shape))
        return self._new(out, out_shape, x.base is not None)

    # -- layers --------------------------------------------------------------------------
    def embedding(self, table: GTensor, ids: GTensor) -> GTensor:
        if len(table.shape) != 2:
            raise UsageError(f"embedding: table must be 2-d, got shape {list(table.shape)}", BUG_HINT)
        if ids.type != I32 or len(ids.shape) != 1:
            raise UsageError(f"embedding: ids must be a 1-d int tensor, got shape {list(ids.shape)}", BUG_HINT)
        if ids.host is None:
            raise UsageError("embedding: ids must come from asarray() so they can be range-checked", BUG_HINT)
        rows = table.shape[0]
        if ids.host.min() < 0 or ids.host.max() >= rows:
            raise UsageError(
                f"embedding: ids outside [0, {rows}): min {ids.host.min()}, max {ids.host.max()}",
                BUG_HINT,
            )
        ctx = self._room()
        out = self._lib.ggml_get_rows(ctx, self._p(table), self._index(ids, rows))
        return self._new(out, (ids.shape[0], table.shape[1]), table.base is not None)

    # -- selection (optional ops: ids picked inside a graph) -------------------------------
    def top_k(self, x: GTensor, k: int) -> GTensor:
        return _select_ops.top_k(self.builder, x, k)

    def argsort(self, x: GTensor, descending: bool = False) -> GTensor:
        return _select_ops.argsort(self.builder, x, descending)

    def take(self, table: GTensor, ids: GTensor) -> GTensor:
        return _select_ops.take(self.builder, table, ids)

    def astype(self, x: GTensor, dtype: str) -> GTensor:
        return _select_ops.astype(self.builder, x, dtype)

    def matmul(self, x: GTensor, w: GTensor) -> GTensor:
        ws, xs = w.shape, x.shape
        if len(ws) != 2 or not xs or xs[-1] != ws[1]:
            raise UsageError(
                f"matmul: cannot multiply {list(xs)} by a weight of shape {list(ws)} ([..., K] x [N, K])",
                BUG_HINT,
            )
        self.builder.work += prod(xs) * ws[0]
        ctx = self._room()
        out = self._lib.ggml_mul_mat(ctx, self.memory.matmul_weight(w, self._p(w)), self._pf(x))
        return self._new(out, xs[:-1] + (ws[0],), x.base is not None or w.base is not None)

    def matmul_rows(self, x: GTensor, w: GTensor, group: int = 1) -> GTensor:
        """`matmul` of ``x [B*group, K]`` where each group of rows gets exactly what it gets
        alone (batched decoding). GGML's products of quantized weights, and of float weights by
        two or more rows, compute every row alike whatever the batch; a float weight times one
        row takes another kernel, so single-row groups are multiplied one by one there. Repacked
        weights take rows four at a time and multiply the rest one by one, each a whole pass over
        the weight: for Q4_0 rows are padded with zeros to a multiple of four (each row's result
        is the same either way); Q4_K's four-row kernel rounds a row otherwise than alone, so its
        rows are multiplied one by one."""
        rows = x.shape[0] if len(x.shape) == 2 else 0
        if group < 1 or not rows or rows % group:
            raise UsageError(f"matmul_rows: {list(x.shape)} is not a whole number of groups of {group} rows", BUG_HINT)
        if rows > 1 and self.memory.repacks(w):
            if _ffi.TYPE_NAMES.get(w.type) not in _ROW_EXACT_GEMM:
                return self._row_by_row(x, w, rows)
            if rows % _GEMM_ROWS:
                padded = self.pad(x, 0, 0, _GEMM_ROWS - rows % _GEMM_ROWS)
                return self.slice(self.matmul(padded, w), 0, 0, rows)
        if group > 1 or rows == 1 or w.type not in _FLOAT_WEIGHTS:
            return self.matmul(x, w)
        return self._row_by_row(x, w, rows)

    def _row_by_row(self, x: GTensor, w: GTensor, rows: int) -> GTensor:
        return self.concat([self.matmul(self.slice(x, 0, i, i + 1), w) for i in range(rows)], axis=0)

    def _vector(self, w: GTensor, d: int, what: str) -> Any:
        if w.shape != (d,):
            raise UsageError(f"{what}: weight shape {list(w.shape)} does not match the last axis ({d})", BUG_HINT)
        return self._pf(w)

    def rms_norm(self, x: GTensor, w: GTensor, eps: float) -> GTensor:
        lib, ctx = self._lib, self._room()
        pw = self._vector(w, x.shape[-1], "rms_norm")
        out = lib.ggml_mul(ctx, lib.ggml_rms_norm(ctx, self._pf(x), float(eps)), pw)
        return self._new(out, x.shape, x.base is not None)

    def layer_norm(self, x: GTensor, w: GTensor, b: GTensor, eps: float) -> GTensor:
        lib, ctx = self._lib, self._room()
        d = x.shape[-1]
        pw, pb = self._vector(w, d, "layer_norm"), self._vector(b, d, "layer_norm")
        out = lib.ggml_add(ctx, lib.ggml_mul(ctx, lib.ggml_norm(ctx, self._pf(x), float(eps)), pw), pb)
        return self._new(out, x.shape, x.base is not None)

    def rope(
        self, x: GTensor, positions: GTensor, freqs: np.ndarray, interleaved: bool = True, base: float | None = None
    ) -> GTensor:
        return _attention.rope(self.builder, self.memory, x, positions, freqs, interleaved, base)

    def attention(self, q: GTensor, k: GTensor, v: GTensor, mask: GTensor | None, scale: float) -> GTensor:
        return _attention.attention(self.builder, q, k, v, mask, scale)

    def conv1d(
        self, x: GTensor, w: GTensor, b: GTensor | None, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> GTensor:
        return _conv.conv1d(self.builder, self.memory, x, w, b, stride, dilation, groups)

    def conv_transpose1d(self, x: GTensor, w: GTensor, b: GTensor | None, stride: int = 1, groups: int = 1) -> GTensor:
        return _conv.conv_transpose1d(self.builder, self.memory, x, w, b, stride, groups)

    def conv1d_batch(
        self, x: GTensor, w: GTensor, b: GTensor | None, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> GTensor:
        """`conv1d` of ``x [B, Cin, T]``, each stream exactly as alone (`_conv.conv1d_batch`)."""
        return _conv.conv1d_batch(self.builder, self.memory, x, w, b, stride, dilation, groups)

    def conv_transpose1d_batch(
        self, x: GTensor, w: GTensor, b: GTensor | None, stride: int = 1, groups: int = 1
    ) -> GTensor:
        """`conv_transpose1d` of ``x [B, Cin, T]``, each stream exactly as alone."""
        return _conv.conv_transpose1d_batch(self.builder, self.memory, x, w, b, stride, groups)

    # -- shape ops (`_shape_ops`) --------------------------------------------------------
    def transpose(self, x: GTensor, perm: Sequence[int]) -> GTensor:
        return _shape_ops.transpose(self.builder, x, perm)

    def reshape(self, x: GTensor, shape: Sequence[int]) -> GTensor:
        return _shape_ops.reshape(self.builder, x, shape)

    def slice(self, x: GTensor, axis: int, start: int, stop: int) -> GTensor:
        return _shape_ops.slice_(self.builder, x, axis, start, stop)

    def pad(self, x: GTensor, axis: int, left: int, right: int, mode: str = "constant") -> GTensor:
        return _shape_ops.pad(self.builder, x, axis, left, right, mode)

    def concat(self, xs: Sequence[GTensor], axis: int) -> GTensor:
        return _shape_ops.concat(self.builder, xs, axis)
