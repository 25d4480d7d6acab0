"""Text generation sessions: prompt in batches, stream pieces, stop tokens and strings, KV reuse."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .builtin.samplers import TEXT_DEFAULTS
from .chat_template import render_chat  # noqa: F401 (where commands import it from)
from .errors import GenerationError, UsageError
from .loading.text import LoadedText
from .sampling import SamplerChain, SamplingSettings, sampling_with

FIRST_CACHE = 256  # positions of a session's first KV cache; it grows in multiples of this
PROMPT_CHUNK = 256  # prompt tokens run in one pass (a session's default ``batch``)


@dataclass(init=False, slots=True)
class TextSettings:
    """Limits for one completion, and how its tokens are sampled (temperature 0 = greedy).

    ``sampling`` starts from ``TEXT_DEFAULTS`` (in ``ccsm_core.builtin.samplers``); its fields may
    also be given as keywords, over it: ``TextSettings(temperature=0, max_tokens=16)``.
    """

    max_tokens: int
    stop: Sequence[str]  # end before any of these strings (they are not returned)
    sampling: SamplingSettings

    def __init__(
        self,
        *,
        max_tokens: int = 128,
        stop: Sequence[str] = (),
        sampling: SamplingSettings | None = None,
        **sampling_values: Any,
    ) -> None:
        self.max_tokens, self.stop = max_tokens, stop
        self.sampling = sampling_with("TextSettings", sampling, TEXT_DEFAULTS, sampling_values)

    def chain(self) -> SamplerChain:
        """The sampler chain (validates the limits and every sampling value)."""
        if self.max_tokens < 1:
            raise UsageError(f"max tokens must be >= 1, got {self.max_tokens}", "give --max-tokens 1 or more")
        return self.sampling.to_chain()


@dataclass
class Completion:
    text: str
    ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end token or stop string) or "length"


class Completer:
    """One completion's tokens, sampled from the logits it is given, and its text: pieces are
    UTF-8 safe and stop strings never leak out. `TextSession` and `ccsm_core.text_batch` drive it."""

    def __init__(self, tokenizer: Any, settings: TextSettings, prompt_tokens: int) -> None:
        self.chain, self.rng = settings.chain(), settings.sampling.rng()
        self.max_tokens, self.stop = settings.max_tokens, list(settings.stop)
        self.dec = tokenizer.incremental_decoder()
        self.eog = set(getattr(tokenizer, "eog_ids", ()) or ()) | ({tokenizer.eos_id} - {None})
        self.hold = max((len(x) for x in self.stop), default=0)
        self.text, self.emitted = "", 0
        self.result = Completion("", [], prompt_tokens, "length")

    def advance(self, logits: np.ndarray, *, full: bool = False) -> tuple[str, int | None]:
        """Sample the next token from ``logits``: (the text ready to emit, the token to run next
        or None when the completion has ended). ``full``: the context has no room for that run."""
        generated = self.result.ids
        tok = self.chain(np.asarray(generated, np.int64), logits, self.rng)
        if tok in self.eog:
            return self._finish("stop", flush=True), None
        generated.append(tok)
        scanned = len(self.text)  # no stop string lies wholly in text[:scanned]: look only past it
        self.text += self.dec.feed(tok)
        cut = min(
            (i for i in (self.text.find(x, max(0, scanned - len(x) + 1)) for x in self.stop) if i >= 0), default=-1
        )
        if cut >= 0:
            self.text = self.text[:cut]
            return self._finish("stop", flush=False), None
        piece = ""
        safe = len(self.text) - self.hold + 1 if self.hold else len(self.text)
        if safe > self.emitted:
            piece, self.emitted = self.text[self.emitted : safe], safe
        if full or len(generated) >= self.max_tokens:
            return piece + self._finish("length", flush=True), None
        return piece, tok

    def _finish(self, reason: str, *, flush: bool) -> str:
        """End the completion; the text not emitted yet."""
        if flush:
            self.text += self.dec.flush()  # bytes of a character the last token left incomplete
        self.result.finish_reason, self.result.text = reason, self.text
        rest, self.emitted = self.text[self.emitted :], len(self.text)
        return rest


class TextSession:
    """One conversation with a text model; the KV cache is reused when a prompt extends the last."""

    def __init__(self, loaded: LoadedText, *, context: int | None = None, batch: int = PROMPT_CHUNK) -> None:
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        limit = loaded.model.cfg.stack.max_seq_len
        self.context = min(context or limit, limit)
        self.batch = batch
        # grows with the runs (`reserve`); made for the session's context (LongRoPE's factors)
        self.cache = self.model.new_cache(min(self.context, FIRST_CACHE), self.context)
        self.tokens: list[int] = []  # what the cache holds, in order

    def reserve(self, positions: int) -> None:
        """Make the cache hold ``positions`` (at most the context): the cache is sized by what the
        runs use, not by the model's context length. A larger cache starts empty."""
        need = min(positions, self.context)
        if need <= self.cache.capacity:
            return
        size = min(self.context, -(-max(need, 2 * self.cache.capacity) // FIRST_CACHE) * FIRST_CACHE)
        self.cache = self.model.new_cache(size, self.context)
        self.tokens = []

    def reset(self) -> None:
        """Forget everything: the next prompt is processed from scratch."""
        self.cache.reset()
        self.tokens = []

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        return list(prompt) if not isinstance(prompt, str) else self.tokenizer.encode(prompt)

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly ``ids``; returns the logits after the last one."""
        logits = None
        for chunk in self.chunks(ids):
            logits = self.feed_chunk(chunk)
        assert logits is not None  # `chunks` gives at least one
        return logits

    def chunks(self, ids: Sequence[int]) -> list[list[int]]:
        """Prepare the cache for ``ids`` (what it holds of them is kept) and return the chunks of
        at most ``batch`` tokens still to run, in order, each by `feed_chunk`: the logits after the
        last are `feed`'s. At least one token always runs, to give logits."""
        ids = list(ids)
        if not ids:
            raise UsageError("the prompt is empty", "give some text")
        if len(ids) > self.context:
            raise GenerationError(f"{len(ids)} tokens do not fit the context of {self.context}", "shorten the prompt")
        self.reserve(len(ids))
        keep = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # at least one token must run to give logits
        self.cache.length, self.tokens = keep, ids[:keep]
        return [ids[start : start + self.batch] for start in range(keep, len(ids), self.batch)]

    def feed_chunk(self, chunk: Sequence[int]) -> np.ndarray:
        """Append ``chunk`` (one of `chunks`, in order) to the cache; the logits after its last token."""
        logits = self.model.next_logits(chunk, self.cache)
        self.tokens.extend(chunk)
        return logits

    def _step(self, tok: int) -> np.ndarray:
        """Append one token to the cache and return the logits after it."""
        logits = self.model.next_logits([tok], self.cache)
        self.tokens.append(tok)
        return logits

    def stream(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Iterator[str]:
        """Text pieces as they are generated (UTF-8 safe; stop strings never leak out)."""
        s = settings or TextSettings()
        ids = self.encode(prompt)
        c = Completer(self.tokenizer, s, len(ids))
        self.last = c.result
        self.reserve(len(ids) + s.max_tokens)
        logits = self.feed(ids)
        while True:
            piece, tok = c.advance(logits, full=len(self.tokens) >= self.context)
            if piece:
                yield piece
            if tok is None:
                return
            logits = self._step(tok)

    def generate(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Completion:
        for _ in self.stream(prompt, settings):
            pass
        return self.last
