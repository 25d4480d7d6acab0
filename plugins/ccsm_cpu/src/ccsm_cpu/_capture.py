"""Graphs built once and replayed: ``GgmlBackend.capture(fn, *example_inputs)``.

A model step whose shapes, weights and buffer offsets are the same every time (CSM's decoder
step ``i`` is, frame after frame) need not be rebuilt from Python: `capture` runs ``fn`` once on
placeholder inputs, keeps the resulting graph, its own allocator and tensor metadata, and returns
a function that copies new input values in, computes, and copies the outputs out.

Rules for ``fn``: its only varying inputs are its arguments (host arrays); anything else it reads
is a weight, a persistent buffer, or a constant made inside it with ``asarray`` (copied again at
every replay). Buffer writes inside it happen at every replay, in program order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ccsm_core.errors import BUG_HINT, UsageError

from ._tensor import GTensor
from .lib import Context, GgmlError, Owned

if TYPE_CHECKING:
    from .backend import GgmlBackend

_CAPTURE_OBJECTS = 2048  # tensor objects per capture context


class Captured:
    """One captured graph: replay with ``captured(*arrays) -> list[np.ndarray]``."""

    def __init__(self, be: GgmlBackend, fn: Callable[..., Any], examples: Sequence[np.ndarray]) -> None:
        self.be = be
        gb = self.builder = be.builder
        self._lib, self._ffi = lib, ffi = gb.lib, gb.ffi
        be.flush()  # pending writes first: the capture starts from a clean epoch
        with gb.recording(_CAPTURE_OBJECTS) as ctxs:
            args = [be.asarray(a) for a in examples]
            outs = fn(*args)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            if not outs or not all(isinstance(o, GTensor) and o.owner is be for o in outs):
                raise UsageError("ggml-cpu: a captured function must return tensors of this backend", BUG_HINT)
            self.in_dtypes = [np.int32 if np.asarray(a).dtype.kind in "iub" else np.float32 for a in examples]
            self.in_shapes = [np.asarray(a).shape for a in examples]
            arg_ptrs = [a.ptr if a.epoch == gb.epoch else None for a in args]
            self.consts = [(t, arr) for t, arr in gb.inputs() if not any(t == p for p in arg_ptrs if p is not None)]
            self.args = arg_ptrs
            # inputs used as row indices (embedding ids, cache rows): their bound, checked per replay
            self.bounds = [None if t is None else gb.index_bound(t) for t in arg_ptrs]
            self.outs = [(gb.f32(o), o.shape) for o in outs]
            size = gb.graph_size()
            self.gctx = Context(gb.ggml, lib.ggml_graph_overhead_custom(size, False) + 4096)
            self.graph = lib.ggml_new_graph_custom(self.gctx.handle, size, False)
            for p in gb.pending():
                lib.ggml_build_forward_expand(self.graph, p)
            for p, _ in self.outs:
                lib.ggml_set_output(p)
                lib.ggml_build_forward_expand(self.graph, p)
            ga = lib.ggml_gallocr_new(lib.ggml_backend_cpu_buffer_type())
            if ga == ffi.NULL:
                raise GgmlError("ggml_gallocr_new failed", "free some memory")
            self.galloc = Owned(ga, lib.ggml_gallocr_free)
            if not lib.ggml_gallocr_alloc_graph(ga, self.graph):
                raise GgmlError("ggml-cpu: could not allocate a captured graph", "free some memory")
            self.ctxs = ctxs
            self.work = gb.work
        self.nodes = lib.ggml_graph_n_nodes(self.graph)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        be, lib, ffi = self.be, self._lib, self._ffi
        if len(arrays) != len(self.args):
            raise UsageError(f"ggml-cpu: captured graph takes {len(self.args)} inputs, got {len(arrays)}", BUG_HINT)
        be.flush()
        start = time.perf_counter()
        for t, arr in self.consts:
            ffi.memmove(lib.ggml_get_data(t), arr, arr.nbytes)
        for t, a, dtype, shape, bound in zip(self.args, arrays, self.in_dtypes, self.in_shapes, self.bounds):
            arr = np.ascontiguousarray(a, dtype=dtype)
            if arr.shape != shape:
                raise UsageError(
                    f"ggml-cpu: captured input has shape {list(arr.shape)}, expected {list(shape)}",
                    BUG_HINT,
                )
            if bound is not None and arr.size:
                lo, hi = (v := arr.item(), v) if arr.size == 1 else (arr.min(), arr.max())  # one id: no reductions
                if lo < 0 or hi >= bound:
                    raise UsageError(
                        f"ggml-cpu: captured row indices {lo}..{hi} are outside [0, {bound})",
                        BUG_HINT,
                    )
            if t is not None:
                ffi.memmove(lib.ggml_get_data(t), arr, arr.nbytes)
        be.compute_graph(self.graph, self.work, "captured graph compute", self.nodes)
        read = self.builder.read
        out = [read(p, shape) for p, shape in self.outs]
        be.count_eval_time(time.perf_counter() - start)
        return out
