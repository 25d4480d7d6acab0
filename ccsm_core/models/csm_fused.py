"""CSM's decoder codes sampled inside the graph: one graph per frame, exact as the host sampler.

The host path (`CSM.frame` with a `SampleFn`) reads codebook ``i``'s logits, samples on NumPy and
feeds the code to step ``i + 1``: 31 trips to the host per frame. For the common chain (bans by
a ``-inf`` logit bias, temperature, top-k ``K``, the ``categorical`` or ``greedy`` sampler) the
frame here runs all 31 decoder steps in one graph that picks each code itself:

- before the graph the ``31 x K`` exponential draws are taken at once (NumPy's generator draws
  them one after another, so this equals 31 draws of ``K``); the graph picks
  ``argmax(softmax(y_top) / q)`` over the ``K`` best ids in id order (``y = (logits + bias) / T``)
  and reads the next step's embedding row by that id;
- the graph hands back, per step, the ``K + 1`` best biased logits and their ids, its pick and
  the logits' sum; the host then recomputes each step's pick exactly as the sampler does
  (float64 log-softmax over the live ids) in one vectorised pass;
- the frame stands when every step's ``K``-th and ``K+1``-th values differ after the division
  (no tie at the top-k boundary, so the live ids are exactly these ``K``), the sum is finite (no
  NaN/inf logits) and the graph picked what the host picks. Otherwise, from the first step that
  fails, the generator is rewound to its state after the steps before and the host path goes on
  from there (the cache rows of the steps before hold what the host path would have written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..backends.base import Tensor, has_select_ops

if TYPE_CHECKING:
    from .llama import KVCache

CSM = Any  # a `ccsm_core.models.csm.CSM` (which imports this module)

MAX_FUSED_TOPK = 64  # larger top-k: the host path


@dataclass(frozen=True)
class FusedPlan:
    """A sampler chain the graph can run: ids banned by a ``-inf`` bias, the temperature (None:
    no division), top-k ``k`` (1 for greedy) and whether the pick is greedy (no draws)."""

    banned: tuple[int, ...]
    temperature: float | None
    k: int
    greedy: bool


class FusableSampler(Protocol):
    """What `CSM.frame` needs from a sampler to run the fused path (`FrameSampler` has it)."""

    rng: np.random.Generator

    def __call__(self, i: int, logits: np.ndarray) -> int: ...

    def fused_plan(self) -> FusedPlan | None: ...

    def record(self, i: int, code: int) -> None: ...


def plan_for(be: Any, sample: Any, vocab: int) -> FusedPlan | None:
    """The fused plan of ``sample`` if both it and the backend ``be`` can run one, else None."""
    fused_plan = getattr(sample, "fused_plan", None)
    if fused_plan is None or not has_select_ops(be):
        return None
    plan = fused_plan()
    if plan is None or plan.k + 1 + len(plan.banned) > vocab or any(i >= vocab for i in plan.banned):
        return None
    return plan


def run(model: CSM, plan: FusedPlan, sample: FusableSampler, h: Any, codes: np.ndarray, cache: KVCache) -> int:
    """Sample codes ``1..n-1`` of one frame in the graph (``codes[0]`` is set; ``h`` is the
    backbone state, a host array or tensor). Returns the first codebook the host path must still
    sample (``n`` when the frame stands), with the cache and generator as that path expects."""
    h_in = np.asarray(h, np.float32) if isinstance(h, np.ndarray) else h

    def compute(inv_q: np.ndarray, bias: np.ndarray, inv_t: np.ndarray) -> np.ndarray:
        args = (h_in, np.array([codes[0]], np.int32), inv_q[:, 0], bias, inv_t)
        return _compute(model, plan, cache, args)[:, None]

    start = int(run_rows([plan], [sample], codes[None], compute, model.cfg.audio_vocab_size)[0])
    cache.length = start
    return start


Compute = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``(1/q [n-1, B, k], bias [B, vocab], 1/T [B, 1]) -> packed [n-1, B, 2k+4]``: a graph's
decoder steps 1..n-1 for ``B`` streams (`select` per step)."""


def run_rows(
    plans: list[FusedPlan], samplers: list[FusableSampler], codes: np.ndarray, compute: Compute, vocab: int
) -> np.ndarray:
    """Codes ``1..n-1`` of one frame of ``B`` streams (``codes [B, n]``, column 0 set) picked by
    ``compute``, every plan with the same top-k. Returns, per stream, the first codebook the
    host path must still sample (``n``: none); each generator is rewound to its state after the
    steps that stood, and their picks are recorded."""
    b, n = codes.shape
    k = plans[0].k
    q = np.ones((b, n - 1, k))
    states: list[Any] = [None] * b
    for j, (plan, sample) in enumerate(zip(plans, samplers)):
        if not plan.greedy:
            states[j] = sample.rng.bit_generator.state
            q[j] = sample.rng.exponential(1.0, size=(n - 1, k))
    bias = np.concatenate([bias_row(plan, vocab) for plan in plans])
    temps = np.array([plan.temperature or 1.0 for plan in plans], np.float32)
    inv_q = np.ascontiguousarray((1.0 / q).astype(np.float32).transpose(1, 0, 2))
    packed = compute(inv_q, bias, (1.0 / temps[:, None]).astype(np.float32))
    rows = packed.transpose(1, 0, 2).reshape(b * (n - 1), -1)
    greedy = np.repeat([plan.greedy for plan in plans], n - 1)
    picks, ok = exact_rows(rows, k, np.repeat(temps, n - 1), greedy, q.reshape(b * (n - 1), k))
    picks, ok = picks.reshape(b, n - 1), ok.reshape(b, n - 1)
    good = np.where(ok.all(axis=1), n - 1, np.argmin(ok, axis=1))  # steps that stand, from codebook 1 on
    for j, sample in enumerate(samplers):
        g = int(good[j])
        codes[j, 1 : 1 + g] = picks[j, :g]
        for i in range(1, 1 + g):
            sample.record(i, int(codes[j, i]))
        if g < n - 1 and states[j] is not None:  # rewind: the draws of the steps that stood, then the host's own
            sample.rng.bit_generator.state = states[j]
            sample.rng.exponential(1.0, size=g * k)
    return 1 + good


def bias_row(plan: FusedPlan, vocab: int) -> np.ndarray:
    """``[1, vocab]``: 0, and ``-inf`` at the banned ids."""
    row = np.zeros((1, vocab), np.float32)
    row[0, list(plan.banned)] = -np.inf
    return row


def _compute(model: CSM, plan: FusedPlan, cache: KVCache, args: tuple[Any, ...]) -> np.ndarray:
    """The frame graph's packed rows ``[n-1, 2k+4]``: captured once per top-k (bans and
    temperature are inputs) where the backend can, else computed op by op."""
    be = model.be
    capture = getattr(be, "capture", None)
    if capture is None:
        h = args[0] if not isinstance(args[0], np.ndarray) else be.asarray(args[0])
        out = frame_graph(model, plan.k, cache)(h, *(be.asarray(a) for a in args[1:]))
        return np.asarray(be.to_numpy(out))
    if not isinstance(args[0], np.ndarray):
        args = (be.to_numpy(args[0]), *args[1:])
    key = ("fused", plan.k)
    step = cache.steps.get(key)
    if step is None:
        step = cache.steps[key] = capture(frame_graph(model, plan.k, cache), *args)
    return np.asarray(step(*args)[0])


def frame_graph(model: CSM, k: int, cache: KVCache) -> Callable[..., Tensor]:
    """``(h [1, d], e0 [1] int, 1/q [n-1, k], bias [1, vocab], 1/T [1, 1]) -> packed [n-1,
    2k+4]``: decoder steps 1..n-1, each picking its code, whose embedding feeds the next step."""
    be: Any = model.be  # with the optional selection ops (`plan_for` checked)
    n, v = model.cfg.audio_num_codebooks, model.cfg.audio_vocab_size

    def graph(h: Tensor, e0: Tensor, inv_q: Tensor, bias: Tensor, inv_t: Tensor) -> Tensor:
        cache.reset()
        offsets = be.asarray(np.arange(n, dtype=np.float32)[None, :] * v)  # codebook i's rows start at i*v
        logits = model._decoder_first(h, e0, cache=cache, trace=None)
        rows = []
        for i in range(1, n):
            row, pick = select(be, logits, bias, be.slice(inv_q, 0, i - 1, i), inv_t, k)
            rows.append(row)
            if i + 1 < n:
                ids = be.astype(be.add(pick, be.slice(offsets, 1, i, i + 1)), "int32")
                x = be.matmul(be.take(model.audio_embeddings, ids), model.projection)
                hd = model.decoder.forward(x, np.array([i + 1]), cache)
                logits = be.matmul(hd, model.audio_heads[i])
        return be.concat(rows, axis=0)

    return graph


def select(be: Any, logits: Tensor, bias: Tensor, inv_q: Tensor, inv_t: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """One step's picks in the graph for ``R`` rows (streams): ``logits, bias [R, vocab]``,
    ``inv_q [R, k]``, ``inv_t [R, 1]`` -> ``(packed [R, 2k+4], pick [R, 1] as float)``. A row
    of ``packed`` is the ``k+1`` best biased logits (largest first), their ids, the pick and the
    logits' sum. The pick is a float32 guess of the host's (`exact_rows` checks it)."""
    r, vocab = be.shape(logits)
    x = be.add(logits, bias)
    top = be.top_k(x, k + 1)  # [R, k+1], in no order
    vals = be.take(be.reshape(x, (r * vocab, 1)), _flat(be, top, vocab))  # [R*(k+1), 1]
    order = _flat(be, be.argsort(be.reshape(vals, (r, k + 1)), descending=True), k + 1)
    vals_d = be.take(vals, order)
    ids_d = be.take(be.reshape(be.astype(top, "float32"), (r * (k + 1), 1)), order)
    ids_k = be.slice(be.reshape(ids_d, (r, k + 1)), 1, 0, k)
    by_id = _flat(be, be.argsort(ids_k), k)  # the live ids in ascending order, as the host
    vals_k = be.reshape(be.slice(be.reshape(vals_d, (r, k + 1)), 1, 0, k), (r * k, 1))
    vals_a = be.reshape(be.take(vals_k, by_id), (r, k))
    ids_a = be.take(be.reshape(ids_k, (r * k, 1)), by_id)
    race = be.mul(be.softmax(be.mul(vals_a, inv_t)), inv_q)  # probs / q: the exponential race
    pick = be.take(ids_a, _flat(be, be.top_k(race, 1), k))  # [R, 1]
    total = be.reshape(be.sum(logits, axis=1), (r, 1))
    packed = be.concat(
        [be.reshape(vals_d, (r, k + 1)), be.reshape(ids_d, (r, k + 1)), pick, total],
        axis=1,
    )
    return packed, pick


def _flat(be: Any, ids: Tensor, width: int) -> Tensor:
    """Row ``r``'s ids ``[R, m]`` (int) into a ``[R * width]`` table as ``ids + r * width``,
    ``[1, R*m]`` (int) for `take`."""
    r, m = be.shape(ids)
    if r == 1:
        return ids
    offsets = be.asarray((np.arange(r, dtype=np.float32) * width)[:, None])
    return be.astype(be.reshape(be.add(be.astype(ids, "float32"), offsets), (1, r * m)), "int32")


def exact_picks(packed: np.ndarray, plan: FusedPlan, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(picks [N], ok [N])`` for rows ``packed [N, 2k+4]`` all sampled under ``plan`` (see
    `exact_rows`)."""
    rows = len(packed)
    temps = np.full(rows, plan.temperature or 1.0, np.float32)
    return exact_rows(packed, plan.k, temps, np.full(rows, plan.greedy), q)


def exact_rows(
    packed: np.ndarray, k: int, temperature: np.ndarray, greedy: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(picks [N], ok [N])``: each row's pick as the host sampler computes it from the graph's
    best values (row ``r`` at ``temperature[r]``, 1 for none; greedy where ``greedy[r]``; draws
    ``q[r]``), and whether the row stands (see the module doc)."""
    vals, ids = packed[:, : k + 1], packed[:, k + 1 : 2 * k + 2].astype(np.int64)
    graph_pick, total = packed[:, 2 * k + 2].astype(np.int64), packed[:, 2 * k + 3]
    y = vals / temperature.astype(np.float32)[:, None]
    ok = np.isfinite(total) & (y[:, k - 1] > y[:, k])
    by_id = np.argsort(ids[:, :k], axis=1)
    live = np.take_along_axis(ids[:, :k], by_id, axis=1)
    xs = np.take_along_axis(y[:, :k], by_id, axis=1).astype(np.float64)
    m = np.max(xs, axis=1, keepdims=True)  # `sampling._normalised`, row by row
    with np.errstate(invalid="ignore"):  # non-finite rows do not stand anyway
        lp = xs - m - np.log(np.sum(np.exp(xs - m), axis=1, keepdims=True))
        race = np.exp(lp) / q
    picks = np.where(greedy, ids[:, 0], live[np.arange(len(live)), np.argmax(race, axis=1)])
    return picks, ok & (picks == graph_pick)
