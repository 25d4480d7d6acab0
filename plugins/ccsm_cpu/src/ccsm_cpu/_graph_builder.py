"""The graph under construction (one *epoch*) and its evaluation.

Ops add tensor metadata to reusable no-alloc contexts of the current epoch. Evaluating builds one
graph from (1) every pending buffer write and buffer read, in program order, (2) every handle of
this epoch that Python still holds, allocates it with ``ggml_gallocr`` (memory reused across
nodes and evaluations) and has it computed. Held handles then keep their values on the host,
buffer handles point at their persistent buffer again, and the epoch's contexts are reset.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ccsm_core.errors import BUG_HINT, CcsmError, UsageError

from . import _ffi
from ._persistent_memory import PersistentMemory
from ._tensor import BUFFER, HOST, PERSIST, TEMP, VIEW, GTensor, ne, prod
from .lib import Context, Ggml, GgmlError, Owned

F32 = _ffi.F32
EPOCH_OBJECTS = 4096  # tensor objects per epoch context (about 1.5 MB of metadata)
ROOM = 16  # objects one public op may create at most, except where it asks for more


class GraphBuilder:
    """Contexts, live handles, pending writes/reads and host inputs of the current epoch.

    ``epoch`` numbers the current graph (handles of earlier ones must be re-linked from their host
    value); ``work`` counts its multiply-adds of heavy ops (matmul, attention, conv), which
    decides the thread count. Handles are created for ``owner`` (the backend, held weakly)."""

    def __init__(self, g: Ggml, owner: Any, memory: PersistentMemory) -> None:
        self.ggml, self.lib, self.ffi = g, g.lib, g.ffi
        lib = self.lib
        self._ovh = g.tensor_overhead
        self._owner = weakref.ref(owner)
        self._memory = memory  # its tensors can be leaves of every graph
        ga = lib.ggml_gallocr_new(lib.ggml_backend_cpu_buffer_type())
        if ga == self.ffi.NULL:
            raise GgmlError("ggml_gallocr_new failed", "free some memory")
        self._galloc = Owned(ga, lib.ggml_gallocr_free)
        self.closed = False
        self.epoch = 0
        self.work = 0
        self._ctxs: list[Context] = []
        self._ci = -1
        self._ctx: Any = None
        self._limit = 0
        self._next_ctx_size: int | None = None  # object count of new contexts while recording
        self._live: list[weakref.ref] = []
        self._order: list[Any] = []
        self._inputs: list[tuple[Any, np.ndarray]] = []
        self._index_bounds: dict[int, int] = {}  # index input tensor address -> rows it may address
        self._gctx: Context | None = None
        self._gsize = 0
        self._next_ctx()

    def close(self) -> None:
        """Free the contexts and the allocator; every handle of this epoch becomes stale."""
        self.closed = True
        for owned in [self._galloc, *self._ctxs, *([self._gctx] if self._gctx else [])]:
            owned.close()
        self.epoch += 1

    # -- building ------------------------------------------------------------------------
    def _next_ctx(self) -> None:
        self._ci += 1
        if self._ci == len(self._ctxs):
            self._ctxs.append(Context(self.ggml, (self._next_ctx_size or EPOCH_OBJECTS) * self._ovh))
        self._ctx = self._ctxs[self._ci].handle
        self._limit = self._ctxs[self._ci].mem_size

    def room(self, n: int = ROOM) -> Any:
        """The current epoch context, with room for ``n`` more tensor objects."""
        if self.closed:
            raise UsageError("ggml-cpu: the backend is closed", BUG_HINT)
        if self.lib.ggml_used_mem(self._ctx) + n * self._ovh > self._limit:
            if n > EPOCH_OBJECTS:
                raise UsageError(f"ggml-cpu: one op needs {n} graph nodes (limit {EPOCH_OBJECTS})", BUG_HINT)
            self._next_ctx()
        return self._ctx

    def new(
        self,
        ptr: Any,
        shape: tuple[int, ...],
        ordered: bool = False,
        kind: int = TEMP,
        base: GTensor | None = None,
        gtype: int = F32,
    ) -> GTensor:
        """A handle of this epoch for node ``ptr``; ``ordered``: the node reads or writes a buffer,
        so it is computed at the next evaluation in program order, held or not."""
        h = GTensor(ptr, shape, gtype, self.epoch, None, base, kind, self._owner())
        self._live.append(weakref.ref(h))
        if ordered:
            self._order.append(ptr)
        return h

    def tensor(self, h: GTensor) -> Any:
        """``h``'s tensor in the current graph."""
        try:
            epoch = h.epoch
        except AttributeError:
            raise UsageError(
                f"ggml-cpu: expected a tensor of this backend, got {type(h).__name__}",
                "wrap host arrays with backend.asarray(...)",
            ) from None
        if (epoch == self.epoch or epoch == PERSIST) and h.owner is self._owner():
            return h.ptr
        return self._relink(h)

    def _relink(self, h: GTensor) -> Any:
        """A new input tensor for a handle whose value is on the host."""
        if h.owner is not self._owner():
            raise UsageError("ggml-cpu: this tensor belongs to another backend instance", BUG_HINT)
        if self.closed:
            raise UsageError("ggml-cpu: the backend is closed", BUG_HINT)
        if h.host is None:
            raise CcsmError("ggml-cpu: this tensor was lost when an evaluation failed", "recompute it from its inputs")
        t = self.lib.ggml_new_tensor_4d(self.room(1), h.type, *ne(h.shape))
        self.lib.ggml_set_input(t)
        self._inputs.append((t, h.host))
        h.ptr, h.epoch = t, self.epoch
        return t

    def f32(self, h: GTensor) -> Any:
        """``h``'s tensor as float32 (a cast node for weights stored in another type)."""
        p = self.tensor(h)
        if h.type == F32:
            return p
        return self.lib.ggml_cast(self.room(), p, F32)

    def index(self, idx: GTensor, bound: int) -> Any:
        """``idx``'s tensor, noted as rows in ``[0, bound)``: a captured graph checks the values
        of such inputs at every replay before GGML reads or writes through them."""
        p = self.tensor(idx)
        key = int(self.ffi.cast("uintptr_t", p))
        self._index_bounds[key] = min(bound, self._index_bounds.get(key, bound))
        return p

    # -- what the epoch holds ------------------------------------------------------------
    def pending(self) -> list[Any]:
        """Nodes that read or write buffers, in program order (the builder's own list: read only)."""
        return self._order

    def inputs(self) -> list[tuple[Any, np.ndarray]]:
        """(input tensor, host array) pairs copied in before computing (read only)."""
        return self._inputs

    def index_bound(self, t: Any) -> int | None:
        """The rows input tensor ``t`` may address, if it indexes rows."""
        return self._index_bounds.get(int(self.ffi.cast("uintptr_t", t)))

    def graph_size(self) -> int:
        """Nodes a graph of this epoch may need: its tensor objects plus every persistent tensor."""
        used = sum(self.lib.ggml_used_mem(c.handle) for c in self._ctxs[: self._ci + 1])
        return used // self._ovh + self._memory.count + 8

    def read(self, ptr: Any, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """A copy of the float32 (or int32) data of an allocated tensor."""
        data = self.lib.ggml_get_data(ptr)
        if data == self.ffi.NULL:
            raise GgmlError("ggml-cpu: an output was not allocated", "report this as a bug")
        buf = self.ffi.buffer(data, prod(shape) * 4)
        return np.frombuffer(buf, dtype).reshape(shape).copy()

    # -- evaluation ----------------------------------------------------------------------
    def _graph(self, size: int) -> Any:
        lib = self.lib
        if self._gctx is None or size > self._gsize:
            if self._gctx is not None:
                self._gctx.close()
            self._gsize = max(size, 2 * self._gsize, 1024)
            self._gctx = Context(self.ggml, lib.ggml_graph_overhead_custom(self._gsize, False) + 4096)
        lib.ggml_reset(self._gctx.handle)
        return lib.ggml_new_graph_custom(self._gctx.handle, self._gsize, False)

    def evaluate(self, out: GTensor | None, compute: Callable[[Any, int, str], None]) -> None:
        """Compute every pending write/read and every held handle of this epoch (and ``out``)
        with ``compute(graph, work, what)``, then start a new epoch."""
        lib, ffi = self.lib, self.ffi
        epoch = self.epoch
        held = [h for h in (r() for r in self._live) if h is not None and h.epoch == epoch]
        if out is not None and out.epoch == epoch and all(h is not out for h in held):
            held.append(out)
        try:
            gf = self._graph(self.graph_size())
            expand = lib.ggml_build_forward_expand
            for p in self._order:
                expand(gf, p)
            copy = [h for h in held if h.kind in (TEMP, VIEW)]
            for h in copy:
                lib.ggml_set_output(h.ptr)
                expand(gf, h.ptr)
            if lib.ggml_graph_n_nodes(gf) == 0 and not copy:
                return
            if not lib.ggml_gallocr_alloc_graph(self._galloc.handle, gf):
                raise GgmlError("ggml-cpu: could not allocate the compute graph", "free some memory")
            for t, arr in self._inputs:
                data = lib.ggml_get_data(t)
                if data != ffi.NULL:
                    ffi.memmove(data, arr, arr.nbytes)
            compute(gf, self.work, "graph compute")
            for h in copy:
                h.host = self.read(h.ptr, h.shape, np.int32 if h.type == _ffi.I32 else np.float32)
                h.kind = HOST
        finally:
            for h in held:  # buffer handles point at their buffer again, even after a failure
                if h.kind == BUFFER:
                    h.ptr, h.epoch = h.base.ptr, PERSIST
            self._reset()

    def _reset(self) -> None:
        for c in self._ctxs[: self._ci + 1]:
            self.lib.ggml_reset(c.handle)
        self._ci = -1
        self._next_ctx()
        self.epoch += 1
        self.work = 0
        self._live.clear()
        self._order.clear()
        self._inputs.clear()
        self._index_bounds.clear()

    @contextmanager
    def recording(self, objects: int) -> Iterator[list[Context]]:
        """Build into fresh contexts of ``objects`` tensor objects each (yielded: the caller keeps
        them, with the graph they describe); afterwards the epoch ends without computing and the
        previous contexts come back."""
        saved = (self._ctxs, self._ci, self._ctx, self._limit, self._index_bounds)
        self._ctxs, self._ci, self._index_bounds = [], -1, {}
        self._next_ctx_size = objects
        try:
            self._next_ctx()
            yield self._ctxs
        finally:
            for h in (r() for r in self._live):  # buffer handles point at their buffers again
                if h is not None and h.kind == BUFFER:
                    h.ptr, h.epoch = h.base.ptr, PERSIST
            self._ctxs, self._ci, self._ctx, self._limit, self._index_bounds = saved
            self._next_ctx_size = None
            self.epoch += 1
            self.work = 0
            self._live.clear()
            self._order.clear()
            self._inputs.clear()
