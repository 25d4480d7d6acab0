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
            raise UsageError(f"max tokens must be >= 1, got {self.max_tokens}")
        return self.sampling.to_chain()


@dataclass
class Completion:
    text: str
    ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end token or stop string) or "length"


class TextSession:
    """One conversation with a text model; the KV cache is reused when a prompt extends the last."""

    def __init__(self, loaded: LoadedText, *, context: int | None = None, batch: int = 256) -> None:
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        limit = loaded.model.cfg.stack.max_seq_len
        self.context = min(context or limit, limit)
        self.batch = batch
        self.cache = self.model.new_cache(min(self.context, FIRST_CACHE))  # grows with the runs (`reserve`)
        self.tokens: list[int] = []  # what the cache holds, in order

    def reserve(self, positions: int) -> None:
        """Make the cache hold ``positions`` (at most the context): the cache is sized by what the
        runs use, not by the model's context length. A larger cache starts empty."""
        need = min(positions, self.context)
        if need <= self.cache.capacity:
            return
        size = min(self.context, -(-max(need, 2 * self.cache.capacity) // FIRST_CACHE) * FIRST_CACHE)
        self.cache = self.model.new_cache(size)
        self.tokens = []

    def reset(self) -> None:
        """Forget everything: the next prompt is processed from scratch."""
        self.cache.reset()
        self.tokens = []

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        return list(prompt) if not isinstance(prompt, str) else self.tokenizer.encode(prompt)

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly ``ids``; returns the logits after the last one."""
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
        logits = None
        for start in range(keep, len(ids), self.batch):
            chunk = ids[start : start + self.batch]
            logits = self.model.next_logits(chunk, self.cache)
            self.tokens.extend(chunk)
        assert logits is not None  # keep < len(ids): the loop ran
        return logits

    def _step(self, tok: int) -> np.ndarray:
        """Append one token to the cache and return the logits after it."""
        logits = self.model.next_logits([tok], self.cache)
        self.tokens.append(tok)
        return logits

    def stream(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Iterator[str]:
        """Text pieces as they are generated (UTF-8 safe; stop strings never leak out)."""
        s = settings or TextSettings()
        self.last = Completion("", [], 0, "length")
        chain, rng = s.chain(), s.sampling.rng()
        ids = self.encode(prompt)
        self.last.prompt_tokens = len(ids)
        self.reserve(len(ids) + s.max_tokens)
        logits = self.feed(ids)
        dec = self.tokenizer.incremental_decoder()
        eog = set(getattr(self.tokenizer, "eog_ids", ()) or ()) | ({self.tokenizer.eos_id} - {None})
        text, emitted = "", 0
        hold = max((len(x) for x in s.stop), default=0)
        generated: list[int] = []
        cut = -1
        for _ in range(s.max_tokens):
            tok = chain(np.asarray(generated, np.int64), logits, rng)
            if tok in eog:
                self.last.finish_reason = "stop"
                break
            generated.append(tok)
            scanned = len(text)  # no stop string lies wholly in text[:scanned]: look only past it
            text += dec.feed(tok)
            cut = min((i for i in (text.find(x, max(0, scanned - len(x) + 1)) for x in s.stop) if i >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                self.last.finish_reason = "stop"
                break
            safe = len(text) - hold + 1 if hold else len(text)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
            if len(self.tokens) >= self.context:
                break
            logits = self._step(tok)
        if cut < 0:
            text += dec.flush()  # bytes of a character the last token left incomplete
        if len(text) > emitted:
            yield text[emitted:]
        self.last.text, self.last.ids = text, generated

    def generate(self, prompt: str | Sequence[int], settings: TextSettings | None = None) -> Completion:
        for _ in self.stream(prompt, settings):
            pass
        return self.last
