"""The backend contract: the small lazy tensor API every model in ccsm is written against.

Shapes are logical and row-major (NumPy order, last axis contiguous). A backend returns its own
tensor handles from every op; nothing is guaranteed to be computed until ``to_numpy`` (the
evaluation point). The NumPy backend computes eagerly; a graph backend (GGML) adds nodes and
computes the graph at ``to_numpy``; a lazy-array backend (MLX) calls its ``eval`` there.

Conventions:

- ``matmul(x, w)`` takes a *weight* ``w`` of shape ``[N, K]`` (``nn.Linear`` layout, out x in)
  and returns ``x @ w.T``. Weights come from ``weight(t)`` and may stay quantized.
- Inputs that change from step to step (token ids, positions, masks) are created with
  ``asarray`` so a graph backend can keep its graph and only refill the inputs.
- ``zeros`` makes a persistent buffer (KV caches, streaming state); ``write`` stores into it in
  place and returns a handle through which later reads see the write. Ops are ordered as they
  are created: a read of a buffer created before a ``write`` to it sees the old contents (a
  graph backend orders the write after those reads, or copies what they need). A buffer made
  with ``dtype="float16"`` stores half precision (text-model KV caches, as llama.cpp keeps
  them); reads of it are float32 values, and ``attention`` over slices of such caches may run
  in half precision. ``write``'s ``start`` is an int, or an int tensor ``[n]`` from ``asarray``
  giving the row of each of ``x``'s ``n`` rows (axis 0), so a captured step can write at a row
  that changes from replay to replay.
- Masks are additive float32 and may hold ``-inf``; every query row allows at least one key.
- Optional: ``capture(fn, *example_inputs) -> step`` builds ``fn``'s computation once and
  ``step(*arrays) -> list[np.ndarray]`` replays it with new host inputs (writes into buffers
  included). Models use it for steps whose shapes and buffer offsets never change (CSM's decoder
  steps); backends without it simply run ``fn`` every time.
- Optional: ``matmul_rows(x, w, group=1)``, `matmul` where each group of ``group`` rows gets
  exactly what it gets alone; with it, several streams are generated in one pass
  (`ccsm_core.batching`), without it one after another. Declare it with ``batching=True``.
- Optional: ``conv1d_batch(x [B, Cin, T], ...)`` and ``conv_transpose1d_batch``, `conv1d` and
  `conv_transpose1d` of ``B`` streams, each exactly as alone (`ccsm_core.models.mimi_batch`
  decodes the Mimi frames of several streams in one pass); without them each stream's
  convolution runs on its own inside the step.
- Optional selection ops, so a graph can pick ids and read rows by them without the host:
  ``top_k(x [R, N], k)`` (int ids ``[R, k]`` of each row's ``k`` largest, in no order),
  ``argsort(x [R, N], descending=False)`` (int ids that sort each row; order among equal values
  unspecified), ``take(table [R, C], ids)`` (rows ``table[ids]`` ``[n, C]`` for int ids ``[n]``
  or ``[1, n]`` the backend computed, their range unchecked; a weight table too) and
  ``astype(x, "float32" | "int32")`` (float to int truncates). `SELECT_OPS` names them; CSM
  samples its decoder's codes inside the graph with them (`ccsm_core.models.csm_fused`),
  without them on the host.
- Sampling and other host logic run on NumPy over ``to_numpy`` results.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

Tensor = Any  # a backend's own handle type
BUFFER_DTYPES = ("float32", "float16")  # what ``zeros(shape, dtype)`` accepts


@runtime_checkable
class Backend(Protocol):
    """What a compute backend implements. See the module docstring for conventions."""

    name: str

    # data in and out
    def asarray(self, a: np.ndarray) -> Tensor:
        """Host array (float32 or int32) -> tensor."""

    def weight(self, t: Any) -> Tensor:
        """A stored tensor (`TensorData` or ndarray) -> weight."""

    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> Tensor:
        """A persistent buffer of zeros, ``float32`` or ``float16``."""

    def write(self, buf: Tensor, x: Tensor, start: int | Tensor, axis: int = 0) -> Tensor:
        """Store ``x`` into ``buf`` at ``start`` along ``axis`` in place; returns ``buf``'s new handle."""

    def to_numpy(self, x: Tensor) -> np.ndarray:
        """Evaluation point: compute ``x`` and copy to host."""

    def shape(self, x: Tensor) -> tuple[int, ...]:
        """Logical shape, without computing."""

    # elementwise and reductions
    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """Broadcasting add."""

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        """Broadcasting multiply."""

    def scale(self, x: Tensor, s: float) -> Tensor:
        """``x * s``."""

    def sum(self, x: Tensor, axis: int) -> Tensor:
        """Sum over one axis (removed)."""

    def silu(self, x: Tensor) -> Tensor:
        """``x * sigmoid(x)``."""

    def swiglu(self, gate: Tensor, up: Tensor) -> Tensor:
        """``silu(gate) * up`` (one fused op where possible)."""

    def gelu(self, x: Tensor, approximate: bool = False) -> Tensor:
        """GELU: exact (erf), or the tanh approximation with ``approximate=True``."""

    def elu(self, x: Tensor, alpha: float = 1.0) -> Tensor:
        """ELU."""

    def softmax(self, x: Tensor) -> Tensor:
        """Softmax over the last axis."""

    # layers
    def embedding(self, table: Tensor, ids: Tensor) -> Tensor:
        """Rows ``table[ids]``: ``[N] -> [N, d]``."""

    def matmul(self, x: Tensor, w: Tensor) -> Tensor:
        """``[..., K] x [N, K] -> [..., N]``."""

    def rms_norm(self, x: Tensor, w: Tensor, eps: float) -> Tensor:
        """RMSNorm over the last axis, then ``* w``."""

    def layer_norm(self, x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
        """LayerNorm over the last axis."""

    def rope(
        self, x: Tensor, positions: Tensor, freqs: np.ndarray, interleaved: bool = True, base: float | None = None
    ) -> Tensor:
        """Rotary embedding of ``x [S, H, D]`` at int ``positions [S]`` with angle ``pos * freqs[i]``.

        ``interleaved`` rotates adjacent pairs ``(x[2i], x[2i+1])`` (original Llama / moshi);
        otherwise halves ``(x[i], x[i + D/2])`` (NEOX / Hugging Face). ``base``, when given, says
        ``freqs[i] = base ** (-2i / D)``; a backend may derive the angles from it itself (GGML's
        kernel does, exactly as llama.cpp)."""

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
        """``q [S, H, D]``, ``k, v [T, KV, D]``, additive ``mask [S, T]`` -> ``[S, H, D]``.

        Query head ``h`` uses KV head ``h // (H // KV)``."""

    def conv1d(
        self, x: Tensor, w: Tensor, b: Tensor | None, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> Tensor:
        """``x [Cin, T]``, ``w [Cout, Cin/groups, K]`` -> ``[Cout, Tout]``, no padding."""

    def conv_transpose1d(self, x: Tensor, w: Tensor, b: Tensor | None, stride: int = 1, groups: int = 1) -> Tensor:
        """``x [Cin, T]``, ``w [Cin, Cout/groups, K]`` -> ``[Cout, (T-1)*stride + K]``, untrimmed."""

    # shape ops
    def pad(self, x: Tensor, axis: int, left: int, right: int, mode: str = "constant") -> Tensor:
        """Pad one axis with zeros (``constant``) or the edge values (``replicate``)."""

    def concat(self, xs: Sequence[Tensor], axis: int) -> Tensor:
        """Join along ``axis``."""

    def reshape(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        """Row-major reshape."""

    def transpose(self, x: Tensor, perm: Sequence[int]) -> Tensor:
        """Permute axes."""

    def slice(self, x: Tensor, axis: int, start: int, stop: int) -> Tensor:
        """``x[start:stop]`` on ``axis``."""


OPS = tuple(n for n in Backend.__dict__ if not n.startswith("_") and callable(Backend.__dict__[n]))


SELECT_OPS = ("top_k", "argsort", "take", "astype")  # the optional selection ops


def has_select_ops(be: Any) -> bool:
    """Whether ``be`` implements every optional selection op (`SELECT_OPS`)."""
    return all(callable(getattr(be, name, None)) for name in SELECT_OPS)


def matmul_rows(be: Backend, x: Tensor, w: Tensor, group: int = 1) -> Tensor:
    """``be.matmul_rows`` where the backend has it (each group of ``group`` rows of ``x``
    computed exactly as alone: batched decoding), else ``be.matmul``."""
    rows = getattr(be, "matmul_rows", None)
    return be.matmul(x, w) if rows is None else rows(x, w, group=group)


class Replays:
    """Graphs a backend with ``capture`` captured, by key (a shape), replayed with new inputs;
    at most ``keep`` are kept (the least recently used is dropped first)."""

    def __init__(self, be: Any, keep: int = 48) -> None:
        self.be, self.keep = be, keep
        self._steps: OrderedDict[Any, Any] = OrderedDict()

    def replay(self, key: Any, fn: Callable[..., Any], args: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """Run ``fn`` on ``args`` through the graph captured for ``key`` (captured when missing)."""
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = self.be.capture(fn, *args)
            while len(self._steps) > self.keep:
                self._steps.popitem(last=False)
        self._steps.move_to_end(key)
        return step(*args)

    def clear(self) -> None:
        """Forget every graph (the buffers they were captured on are gone)."""
        self._steps.clear()

    def __len__(self) -> int:
        return len(self._steps)
