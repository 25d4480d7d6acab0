"""CSM's decoder codes sampled inside the graph: one graph per frame, exact as the host sampler.

The host path (`CSM.frame` with a `SampleFn`) reads codebook ``i``'s logits, samples on NumPy and
feeds the code to step ``i + 1``: 31 trips to the host per frame. For the common chain (bans by
a ``-inf`` logit bias, temperature, top-k ``K``, the ``categorical`` or ``greedy`` sampler) the
frame runs all 31 decoder steps in one graph that picks each code itself (built by
`decoder_rows.fused_frame`, for one stream as for a batch):

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

from ..backends.base import has_select_ops
from . import decoder_rows

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
    be = model.be
    h_in = np.asarray(h if isinstance(h, np.ndarray) else be.to_numpy(h), np.float32)
    capture = getattr(be, "capture", None)

    def replay(key: Any, fn: Callable[..., Any], args: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        step = cache.steps.get(key)  # captured once per top-k (bans and temperature are inputs)
        if step is None:
            step = cache.steps[key] = be.capture(fn, *args)
        return step(*args)

    def compute(inv_q: np.ndarray, bias: np.ndarray, inv_t: np.ndarray) -> np.ndarray:
        args = (h_in, np.array([codes[0]], np.int32), inv_q[:, 0], bias, inv_t)
        replayed = replay if capture is not None else None
        return decoder_rows.fused_compute(model, cache, [0], plan.k, args, replayed, ("fused", plan.k))[:, None]

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
