"""Continuous batching of text completions: several sequences decoded in one pass per token.

A `TextBatch` holds up to ``slots`` sequences of one text model. Each sequence owns a *slot* of
``span`` rows in one shared KV cache; active sequences occupy slots ``0..B-1`` (a sequence that
ends frees its slot and the last one moves into it), so one decode step depends only on ``B``
and the attention window, and backends that capture graphs replay one per shape. A step reads
the weights once for all ``B`` sequences: on a memory-bound CPU that is what makes it cheaper
than ``B`` single steps.

A sequence joins while the others decode: its prompt is prefilled on one `TextSession` of the
batch's context (``prefill``, reset for each prompt, so it runs exactly as alone), in the
chunks of ``prefill_batch`` tokens that session's `TextSession.feed` uses. Each step runs at
most ``prefill_batch`` prompt tokens (always at least one chunk) before the decode token of
every active sequence, so a long prompt delays the others by one chunk a step rather than by
its whole prefill; while no sequence is active, chunks run without waiting until one is.
Waiting prompts are prefilled one after another, in the order they came, on that one session
(one prefill cache, checked against the memory budget like any); when a prompt's last chunk has
run, it samples its first token and its cache rows are copied into its slot.

Every sequence gets exactly the tokens it gets alone from ``TextSession(loaded,
context=context, batch=prefill_batch)`` with the same settings: products go through the
backend's ``matmul_rows`` (each row computed as by itself) and attention runs per sequence over
its own rows (a longer window only adds rows its mask hides). Sampling, detokenizing and stop
strings are each sequence's own `ccsm_core.textgen.Completer`.

Not thread-safe: one thread drives a batch (the server's worker, a CLI loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .backends.base import Replays, Tensor, matmul_rows
from .errors import UsageError
from .loading.text import LoadedText
from .models.llama import KVCache
from .models.text.model import WINDOW
from .slot_batch import Reader, SlotBatch
from .textgen import PROMPT_CHUNK, Completer, Completion, TextSession, TextSettings


@dataclass(eq=False)
class _Seq:
    ids: list[int]
    settings: TextSettings
    completer: Completer | None = None
    out: deque[str] = field(default_factory=deque)  # text pieces made, not read yet
    slot: int = -1
    length: int = 0  # rows in its cache (its next token's position)
    pending: int = -1  # the token its next step runs
    done: bool = False
    error: BaseException | None = None

    @property
    def need(self) -> int:
        """Positions it may use: its prompt and every token it may generate."""
        return len(self.ids) + self.settings.max_tokens


class TextBatch(SlotBatch[_Seq]):
    """Up to ``slots`` completions of one text model decoded together (see module doc); each
    is as from ``TextSession(loaded, context=context, batch=prefill_batch)``. A step runs at most
    ``prefill_batch`` tokens of joining prompts (always a whole chunk)."""

    def __init__(
        self, loaded: LoadedText, slots: int = 8, *, context: int | None = None, prefill_batch: int = PROMPT_CHUNK
    ) -> None:
        super().__init__(slots, loaded.model.be)
        if isinstance(prefill_batch, bool) or not isinstance(prefill_batch, int) or prefill_batch < 1:
            raise UsageError(f"prefill batch must be an integer >= 1, got {prefill_batch!r}", "give 1 or more tokens")
        self.loaded, self.model, self.tokenizer = loaded, loaded.model, loaded.tokenizer
        self.prefill = TextSession(loaded, context=context, batch=prefill_batch)  # joiners' prompts, as alone
        self.context = self.prefill.context
        self.span = 0  # cache rows per slot (grows with the sequences' needs)
        self._cache: KVCache | None = None
        self._graphs = Replays(self.model.be)
        self._joiner: _Seq | None = None  # the sequence whose prompt is being prefilled
        self._chunks: deque[list[int]] = deque()  # its prompt's chunks not run yet
        self.tokens = 0  # tokens decoded, summed over sequences
        self.prompt_chunks = 0  # prompt chunks run
        self.shared_chunks = 0  # of them, those run in a step that also decoded active sequences

    @property
    def waiting(self) -> int:
        """Sequences not active yet: queued, or being prefilled."""
        return len(self._waiting) + (self._joiner is not None)

    def stream(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Pieces:
        """Join a new sequence and return its text pieces (`Pieces`; ``.last`` is its
        `Completion` once it ends). Closing (or dropping) the iterator early frees its slot."""
        s = settings or TextSettings()
        s.chain()  # bad settings fail here, at the caller
        ids = self.prefill.encode(prompt)
        seq = _Seq(ids, s)
        self._waiting.append(seq)
        return Pieces(self, seq)

    def lane(self) -> BatchedSession:
        """A `TextSession`-like view whose ``stream`` joins this batch (the server's text lanes)."""
        return BatchedSession(self)

    def leave(self, st: _Seq) -> None:
        """``st`` ends now (its reader closed): its slot, its prefill or its place in the queue is freed."""
        if st is self._joiner:
            self._drop_joiner()
        super().leave(st)

    # -- stepping ----------------------------------------------------------------------------
    def step(self) -> None:
        """Run waiting prompts' chunks (see module doc), then one token for every active sequence."""
        self._prefill()
        if not self._active:
            return
        active = list(self._active)
        logits = self._decode(active)
        self.steps += 1
        for seq in active:  # every row of this step is in the cache before any slot moves
            seq.length += 1
        self.tokens += len(active)
        for seq, lg in zip(active, logits):
            self._advance(seq, lg)

    def _prefill(self) -> None:
        """Prompt chunks of waiting sequences, in order, while slots are free: at most
        ``prefill.batch`` tokens (at least one chunk), or until a sequence is active if none is.
        A prompt that fails ends its sequence; only its reader sees why."""
        spent = 0
        while True:
            seq = self._joiner
            if seq is None:
                if not self._waiting or len(self._active) >= self.slots:
                    return
                seq = self._waiting.popleft()
            elif self._active and spent and spent + len(self._chunks[0]) > self.prefill.batch:
                return
            try:
                if seq is not self._joiner:
                    self._start(seq)
                    continue
                chunk = self._chunks.popleft()
                self.prompt_chunks += 1
                self.shared_chunks += bool(self._active)
                logits = self.prefill.feed_chunk(chunk)
                spent += len(chunk)
                if not self._chunks:
                    self._join(seq, logits)
                    self._drop_joiner()
            except Exception as e:
                if seq is self._joiner:
                    self._drop_joiner()
                seq.done, seq.error = True, e

    def _start(self, seq: _Seq) -> None:
        """Make ``seq`` the joiner: its completion, and its prompt's chunks as alone."""
        seq.completer = Completer(self.tokenizer, seq.settings, len(seq.ids))
        self.prefill.reset()  # from scratch, as alone (a reused prefix would be chunked otherwise)
        self.prefill.reserve(seq.need)
        self._chunks = deque(self.prefill.chunks(seq.ids))
        self._joiner = seq

    def _drop_joiner(self) -> None:
        """No sequence is being prefilled (the prefill cache's rows are dropped)."""
        self._joiner = None
        self._chunks.clear()
        self.prefill.reset()

    def _join(self, seq: _Seq, logits: np.ndarray) -> None:
        """``seq``'s prompt has run (``logits``: those after it): sample its first token and give
        it slot ``len(active)``, its rows copied from the prefill cache."""
        seq.length = len(seq.ids)
        self._advance(seq, logits, admitted=False)
        if seq.done:
            return
        self._grow(min(self.context, _round_up(seq.need)))
        seq.slot = len(self._active)
        cache = self._cache
        assert cache is not None
        cache.write_rows(*self.prefill.cache.read_rows(seq.length), at=seq.slot * self.span)
        self._active.append(seq)

    def _advance(self, seq: _Seq, logits: np.ndarray, admitted: bool = True) -> None:
        """Sample ``seq``'s next token from ``logits``; it ends when its completion does."""
        assert seq.completer is not None
        piece, tok = seq.completer.advance(logits, full=seq.length >= self.context)
        if piece:
            seq.out.append(piece)
        if tok is None:
            seq.done = True
            if admitted:
                self._release(seq)
        else:
            seq.pending = tok

    def _grow(self, span: int) -> None:
        """Make every slot hold ``span`` rows; a larger cache takes the active rows along."""
        if self._cache is not None and span <= self.span:
            return
        old, old_span = self._cache, self.span
        self.span = max(span, 2 * old_span if old is not None else span)
        self.span = min(_round_up(self.span), _round_up(self.context))
        self._cache = self.model.new_cache(self.slots * self.span, self.context)  # each slot: the context
        self._graphs.clear()
        if old is not None:
            for seq in self._active:
                self._cache.write_rows(*old.read_rows(seq.length, seq.slot * old_span), at=seq.slot * self.span)

    def _move(self, seq: _Seq, slot: int) -> None:
        assert self._cache is not None
        self._cache.write_rows(*self._cache.read_rows(seq.length, seq.slot * self.span), at=slot * self.span)

    # -- one decode step ---------------------------------------------------------------------
    def _decode(self, active: list[_Seq]) -> np.ndarray:
        """The logits ``[B, vocab]`` after each active sequence's pending token."""
        if self.batched:
            return self._run(active, 0)
        return np.concatenate([self._run([seq], j) for j, seq in enumerate(active)])

    def _run(self, seqs: list[_Seq], first: int) -> np.ndarray:
        """One token for each of ``seqs`` (in slots ``first..``): their logits on the host."""
        model, be, span = self.model, self.model.be, self.span
        b = len(seqs)
        positions = np.array([seq.length for seq in seqs], np.int32)
        # each sequence's window as alone (its context, in steps of WINDOW rows); backends that
        # capture take the largest for all: a graph per (B, window), the masks hide the rest
        windows = [min(self.context, _round_up(int(p) + 1)) for p in positions]
        capture = getattr(be, "capture", None)
        if capture is not None:
            windows = [max(windows)] * b
        rows = ((first + np.arange(b)) * span + positions).astype(np.int32)
        cache = self._cache
        assert cache is not None
        per_seq = [model.stack_for(cache).inputs(positions[j : j + 1], windows[j]) for j in range(b)]
        args = (np.array([seq.pending for seq in seqs], np.int32), positions, rows, *sum(per_seq, []))
        fn = partial(_decode_rows, model, cache, [(first + j) * span for j in range(b)])
        if capture is None:
            return be.to_numpy(fn(*(be.asarray(a) for a in args))[0])
        return self._graphs.replay(("text", first, b, windows[0]), fn, args)[0]


def _decode_rows(model: Any, cache: KVCache, starts: list[int], *inputs: Tensor) -> list[Tensor]:
    """Embed each sequence's token, run the stack on its own rows, and the output head."""
    be = model.be
    ids, pos, rows, *rest = inputs
    b = len(starts)
    per = len(rest) // b
    x = be.embedding(model.embeddings, ids)
    if model.cfg.embed_scale is not None:
        x = be.scale(x, model.cfg.embed_scale)
    h = model.stack_for(cache).batch_step(
        x, pos, rows, [rest[j * per : (j + 1) * per] for j in range(b)], cache, starts
    )
    return [matmul_rows(be, h, model.output)]


def _round_up(n: int) -> int:
    return -(-n // WINDOW) * WINDOW


class Pieces(Reader[str]):
    """One sequence's text pieces; reading one steps the batch until this sequence has one."""

    seq: _Seq

    def __init__(self, batch: TextBatch, seq: _Seq) -> None:
        super().__init__(batch, seq)
        self.seq = seq

    @property
    def last(self) -> Completion:
        """The completion: its text, token ids and finish reason (complete once it ended)."""
        c = self.seq.completer
        return c.result if c is not None else Completion("", [], len(self.seq.ids), "length")


class BatchedSession:
    """``stream``/``generate``/``last`` as `TextSession` has them, over a shared `TextBatch`;
    ``stream`` also yields ``None`` for a turn that gave no piece yet (see `stream`)."""

    def __init__(self, batch: TextBatch) -> None:
        self.batch, self.tokenizer, self.context = batch, batch.tokenizer, batch.context
        self.last = Completion("", [], 0, "length")

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        return self.batch.prefill.encode(prompt)

    def stream(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Iterator[str | None]:
        """Its text pieces; until the sequence has joined, ``None`` after each turn: a turn runs a
        step (a chunk of its prompt, a token of every active sequence) unless another reader ran
        one since its last turn, so a caller taking turns (the server's worker) hands the other
        sequences' pieces out while a long prompt is prefilled."""
        batch = self.batch
        pieces = batch.stream(prompt, settings)
        seq, seen = pieces.seq, batch.steps
        try:
            while seq.slot < 0 and not (seq.out or seq.done):
                if batch.steps == seen:
                    batch.step()
                seen = batch.steps
                if seq.slot < 0 and not (seq.out or seq.done):
                    yield None
            yield from pieces
        finally:
            pieces.close()
            self.last = pieces.last

    def generate(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Completion:
        for _ in self.stream(prompt, settings):
            pass
        return self.last


def generate_many(
    loaded: LoadedText,
    prompts: Sequence[str | Sequence[int]],
    settings: TextSettings | Sequence[TextSettings] | None = None,
    *,
    batch: int = 8,
    context: int | None = None,
) -> list[Completion]:
    """Every prompt's completion, ``batch`` at a time in one `TextBatch` (each as alone)."""
    per = list(settings) if isinstance(settings, Sequence) else [settings or TextSettings()] * len(prompts)
    if len(per) != len(prompts):
        raise UsageError(f"{len(per)} settings for {len(prompts)} prompts", "give one settings per prompt, or one")
    tb = TextBatch(loaded, batch, context=context)
    streams = [tb.stream(p, s) for p, s in zip(prompts, per)]
    for st in streams:
        for _ in st:
            pass
    return [st.last for st in streams]
