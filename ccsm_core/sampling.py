"""Logit processors and samplers (host NumPy), and the chain that composes them.

Processors have the shape ``(tokens, logits) -> logits``; samplers ``(logprobs, rng) -> int``.
The ``categorical`` sampler draws as the original CSM does: ``argmax(probs / q)`` with
``q ~ Exp(1)``, which is an exact categorical draw; with top-k 1 or temperature 0 it is greedy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .errors import GenerationError, UsageError

Processor = Callable[[np.ndarray, np.ndarray], np.ndarray]
SamplerFn = Callable[[np.ndarray, np.random.Generator], int]
NEG_INF = np.float32(-np.inf)


def _number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}", "give a number") from None
    if np.isnan(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise UsageError(f"{name} must be in {rng}, got {value!r}", f"give {name} within {rng}")
    return v


# -- processors -------------------------------------------------------------------------------
def temperature(temperature: float = 1.0) -> Processor:
    """Divide logits by ``temperature`` (> 0; 0 means greedy and is handled by the chain)."""
    t = _number("temperature", temperature, lo=0, lo_open=True)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return logits / np.float32(t)

    apply.describes = ("temperature", t)  # type: ignore[attr-defined]  # what it does, for fused samplers
    return apply


def top_k(k: int = 50) -> Processor:
    """Keep logits >= the k-th largest (ties at the k-th value survive, as the original)."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise UsageError(f"top-k must be an integer >= 1, got {k!r}", "give --top-k 1 or more")
    k = int(k)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if k >= logits.shape[-1]:
            return logits
        return np.where(logits < _kth_largest(logits, k), NEG_INF, logits)

    apply.describes = ("top-k", k)  # type: ignore[attr-defined]
    return apply


def _kth_largest(x: np.ndarray, k: int) -> Any:
    """The k-th largest value of ``x``. Large vocabularies first narrow the search to the values
    above a threshold taken from a strided sample (exact: used only when at least k pass it)."""
    n = x.shape[-1]
    if n >= 8192 and k <= n // 64:
        step = n // 1024
        sample = x[::step]
        rank = min(sample.size, 4 * k // step + 2)  # expect about 4k values above the threshold
        cand = x[x >= np.partition(sample, -rank)[-rank]]
        if cand.size >= k:
            return np.partition(cand, -k)[-k]
    return np.partition(x, -k)[-k]


def top_p(p: float = 1.0) -> Processor:
    """Nucleus: keep the smallest set of top tokens whose probability reaches ``p`` (0 < p <= 1)."""
    p = _number("top-p", p, lo=0, hi=1, lo_open=True)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if p >= 1.0:
            return logits
        live = np.flatnonzero(logits > NEG_INF)  # banned ids carry no probability: sort the rest only
        if live.size == 0:
            return logits
        order = live[np.argsort(-logits[live], kind="stable")]
        probs = _softmax(logits[order])
        keep = np.cumsum(probs) - probs < p  # a token stays if the mass before it is < p
        out = np.full_like(logits, NEG_INF)
        out[order[keep]] = logits[order[keep]]
        return out

    return apply


def min_p(p: float = 0.0) -> Processor:
    """Drop tokens whose probability is below ``p`` times the top token's (0 <= p <= 1)."""
    p = _number("min-p", p, lo=0, hi=1)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if p <= 0:
            return logits
        return np.where(logits < logits.max() + np.log(p), NEG_INF, logits)

    return apply


def repetition_penalty(penalty: float = 1.0) -> Processor:
    """CTRL-style: logits of already generated ids are divided (if > 0) or multiplied by ``penalty``."""
    r = _number("repetition penalty", penalty, lo=0, lo_open=True)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if r == 1.0 or len(tokens) == 0:
            return logits
        seen = np.unique(tokens)
        out = logits.copy()
        vals = out[seen]
        out[seen] = np.where(vals > 0, vals / r, vals * r)
        return out

    return apply


def frequency_penalty(penalty: float = 0.0) -> Processor:
    """Subtract ``penalty`` x (times the id was generated) from each logit."""
    f = _number("frequency penalty", penalty, lo=-2, hi=2)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if f == 0 or len(tokens) == 0:
            return logits
        counts = np.bincount(tokens, minlength=logits.shape[-1])[: logits.shape[-1]]
        return logits - np.float32(f) * counts.astype(np.float32)

    return apply


def presence_penalty(penalty: float = 0.0) -> Processor:
    """Subtract ``penalty`` once from the logit of every id already generated."""
    pp = _number("presence penalty", penalty, lo=-2, hi=2)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if pp == 0 or len(tokens) == 0:
            return logits
        out = logits.copy()
        out[np.unique(tokens)] -= np.float32(pp)
        return out

    return apply


def logit_bias(bias: Mapping[int, float] | None = None) -> Processor:
    """Add ``bias[id]`` to the logit of ``id`` (``-inf`` bans it)."""
    items = [(int(k), float(v)) for k, v in (bias or {}).items()]
    for k, _ in items:
        if k < 0:
            raise UsageError(f"logit bias id must be >= 0, got {k}", "give token ids of 0 or more")
    ids = np.array([k for k, _ in items], np.int64)  # distinct (dict keys): one add each
    values = np.array([v for _, v in items], np.float32)
    top = max((k for k, _ in items), default=-1)

    def apply(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if not items:
            return logits
        if top >= len(logits):
            raise UsageError(
                f"logit bias id {top} is outside the vocabulary of {len(logits)}", f"give ids 0..{len(logits) - 1}"
            )
        out = logits.copy()
        out[ids] += values
        return out

    apply.describes = ("logit-bias", dict(items))  # type: ignore[attr-defined]
    return apply


# -- samplers ---------------------------------------------------------------------------------
def greedy() -> SamplerFn:
    """The most likely id (lowest id on ties)."""

    def pick(logprobs: np.ndarray, rng: np.random.Generator) -> int:
        return int(np.argmax(logprobs))

    pick.order_only = True  # type: ignore[attr-defined]  # the logits' order decides: no normalising needed
    pick.describes = ("greedy", None)  # type: ignore[attr-defined]
    return pick


def categorical() -> SamplerFn:
    """An exact categorical draw as the original: ``argmax(probs / q)``, ``q ~ Exp(1)``, taken
    over the ids a filter left (the others have probability 0 and could never win)."""

    def draw(logprobs: np.ndarray, rng: np.random.Generator) -> int:
        live = np.flatnonzero(logprobs > -np.inf)
        return draw_live(live, logprobs[live].astype(np.float64), rng)

    def draw_live(live: np.ndarray, logprobs: np.ndarray, rng: np.random.Generator) -> int:
        return int(live[np.argmax(np.exp(logprobs) / rng.exponential(1.0, size=live.shape))])

    draw.draw_live = draw_live  # type: ignore[attr-defined]  # the chain's shortcut: the live ids' log-probs only
    draw.describes = ("categorical", None)  # type: ignore[attr-defined]
    return draw


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - np.max(x))
    return e / e.sum()


def log_softmax(x: np.ndarray) -> np.ndarray:
    live = np.flatnonzero(x > -np.inf)
    if live.size == x.size:
        return _normalised(x.astype(np.float64))
    out = np.full(x.shape, -np.inf)  # filtered ids stay -inf; the rest are normalised among themselves
    out[live] = _normalised(x[live].astype(np.float64))
    return out


def _normalised(xs: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64) of the finite logits ``xs``, normalised among themselves."""
    m = np.max(xs) if xs.size else 0.0
    return xs - m - np.log(np.sum(np.exp(xs - m)))


@dataclass
class SamplerChain:
    """Processors in order, then one sampler; call with ``(tokens, logits, rng) -> id``."""

    processors: list[Processor] = field(default_factory=list)
    sampler: SamplerFn = field(default_factory=greedy)
    names: list[str] = field(default_factory=list)

    def __call__(self, tokens: np.ndarray, logits: np.ndarray, rng: np.random.Generator) -> int:
        x = np.asarray(logits, dtype=np.float32)
        top = x.max() if x.size else np.float32(0)  # NaN if any is NaN: one pass checks all three cases
        if not np.isfinite(top):  # NaN, +inf, or nothing finite (all -inf)
            bad = "NaN" if np.isnan(top) else "infinite"
            raise GenerationError(
                f"the model computed {bad} logits: its weights hold NaN or infinite values, or overflow",
                "the model file is broken; download or convert it again (or try --backend numpy to compare)",
            )
        for proc in self.processors:
            x = proc(tokens, x)
        if getattr(self.sampler, "order_only", False):  # normalising keeps the order (and the ties)
            _any_left(x)
            return self.sampler(x, rng)
        draw_live = getattr(self.sampler, "draw_live", None)
        if draw_live is not None:  # the sampler reads the live ids only: normalise just those
            live = np.flatnonzero(x > NEG_INF)
            xs = x[live]
            if xs.size and np.isfinite(xs.max()):
                return draw_live(live, _normalised(xs.astype(np.float64)), rng)
        _any_left(x)
        return self.sampler(log_softmax(x), rng)


def _any_left(x: np.ndarray) -> None:
    if not np.isfinite(x).any():
        raise UsageError(
            "every token was filtered out by the sampling settings", "loosen top-p/min-p or the logit bias"
        )


def build_sampler(
    *,
    temperature: float = 1.0,
    topk: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    logit_bias: Mapping[int, float] | None = None,
    extra: Sequence[tuple[str, Mapping[str, Any]]] = (),
    sampler: str | None = None,
) -> SamplerChain:
    """Compose registered processors/samplers from the usual options.

    Order: logit bias, penalties, temperature, top-k, top-p, min-p, ``extra`` processors, sampler.
    Temperature 0 selects the ``greedy`` sampler. Every value is validated by its factory.
    """
    from .plugins import registry

    reg = registry("samplers")
    t = _number("temperature", temperature, lo=0)
    steps: list[tuple[str, dict[str, Any]]] = []
    if logit_bias:
        steps.append(("logit-bias", {"bias": logit_bias}))
    for name, val in (
        ("repetition-penalty", repetition_penalty),
        ("frequency-penalty", frequency_penalty),
        ("presence-penalty", presence_penalty),
    ):
        if val is not None:
            steps.append((name, {"penalty": val}))
    if t > 0:
        steps.append(("temperature", {"temperature": t}))
    if topk is not None:
        steps.append(("top-k", {"k": topk}))
    if top_p is not None:
        steps.append(("top-p", {"p": top_p}))
    if min_p is not None:
        steps.append(("min-p", {"p": min_p}))
    steps.extend((n, dict(p)) for n, p in extra)
    chain = SamplerChain()
    for name, params in steps:
        entry = reg.get(name)
        if entry.kind != "processor":
            raise UsageError(f"{name!r} is a sampler, not a logit processor", "pass it as --sampler")
        chain.processors.append(_make(entry, params))
        chain.names.append(name)
    sname = sampler or ("categorical" if t > 0 else "greedy")
    entry = reg.get(sname)
    if entry.kind != "sampler":
        raise UsageError(
            f"{sname!r} is a logit processor, not a sampler",
            "name a sampler for --sampler (see `ccsm plugins`)",
        )
    chain.sampler = _make(entry, {})
    chain.names.append(sname)
    return chain


def _make(entry: Any, params: dict[str, Any]) -> Any:
    """``entry.factory(**params)``: whatever the plugin's factory raises besides a `CcsmError`
    (its word on a bad value) is a `PluginError` naming the plugin; no callable back is one too.
    A third-party processor or sampler is contained the same way each time it is called."""
    from .plugin_code import Contained, guarded

    call = guarded(entry.plugin, f"the factory of sampler {entry.name!r}")
    with call:
        made = entry.factory(**params)
    if not callable(made):
        raise call.fail(f"returned {type(made).__name__}, not a callable")
    return made if entry.plugin.startswith("ccsm.") else Contained(made, entry.plugin, f"sampler {entry.name!r}")


_KEEP_TOP = ("top-k", "top-p", "min-p")  # filters that always keep the most likely id


@dataclass(slots=True)
class SamplingSettings:
    """How each next id is picked: the logit processors' values, the final sampler and the seed.

    ``None`` leaves a processor out. The defaults here are neutral (a plain draw at temperature 1);
    `GenerationSettings` and `TextSettings` start from speech's and text's defaults instead
    (``SPEECH_DEFAULTS``, ``TEXT_DEFAULTS`` in ``ccsm_core.builtin.samplers``). `to_chain`
    validates every value and builds the `SamplerChain`; `rng` makes the random generator.
    """

    temperature: float = 1.0  # 0 = greedy
    topk: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: Mapping[int, float] | None = None  # id -> added to its logit (-inf bans the id)
    extra_processors: Sequence[tuple[str, Mapping[str, Any]]] = ()  # (registered name, params), after min-p
    sampler: str | None = None  # by registered name; default: categorical, or greedy at temperature 0
    seed: int | None = None

    def to_chain(self) -> SamplerChain:
        """The processors and sampler these settings ask for (a `UsageError` names a bad value).

        Before the greedy sampler top-k, top-p and min-p are checked but left out (they always keep
        the most likely id), unless extra processors follow them."""
        chain = build_sampler(
            temperature=self.temperature,
            topk=self.topk,
            top_p=self.top_p,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            logit_bias=self.logit_bias,
            extra=self.extra_processors,
            sampler=self.sampler,
        )
        if chain.names[-1] == "greedy" and not self.extra_processors:
            keep = [i for i, name in enumerate(chain.names[:-1]) if name not in _KEEP_TOP]
            chain = SamplerChain(
                [chain.processors[i] for i in keep], chain.sampler, [chain.names[i] for i in keep] + chain.names[-1:]
            )
        return chain

    def rng(self) -> np.random.Generator:
        """A new random generator from ``seed`` (fresh entropy when it is None)."""
        return np.random.default_rng(self.seed)


_SAMPLING_FIELDS = frozenset(f.name for f in fields(SamplingSettings))


def sampling_with(
    owner: str, sampling: SamplingSettings | None, defaults: Mapping[str, Any], values: Mapping[str, Any]
) -> SamplingSettings:
    """``sampling`` (else a `SamplingSettings` of ``defaults``) with ``values`` over it: the sampling
    fields given to ``owner(...)`` as keywords, as in ``GenerationSettings(temperature=0.7)``."""
    for name in values:
        if name not in _SAMPLING_FIELDS:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")
    base = sampling if sampling is not None else SamplingSettings(**defaults)
    return replace(base, **values) if values else base
