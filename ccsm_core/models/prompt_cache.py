"""Reusing backbone KV rows across prompts that start with the same turns.

A CSM prompt is prefilled one *chunk* at a time: each context turn, then the new text. Every
prompt is computed the same way whether or not rows are reused, so a reused row is exactly the
row a fresh prefill would compute: the frames do not depend on the cache.

Two kinds of reuse:

- the live cache: the chunks whose rows the backbone cache holds from the previous prompt (a
  long text's next sentence starts with the same voice and earlier sentences; a retry repeats
  the whole prompt);
- saved prefixes: host copies of the rows of pinned leading chunks (a voice's turns), restored
  when another prompt starts with them after the live cache moved on (a server alternating
  voices). At most ``max_bytes`` of them are kept, least recently used first out.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .llama import KVCache

Chunk = tuple[np.ndarray, np.ndarray]  # (tokens, mask), [S, 33] each


def chunk_key(tokens: np.ndarray, mask: np.ndarray) -> bytes:
    """A digest of a chunk's rows (what the KV rows are a function of, given the position)."""
    h = hashlib.sha256()
    h.update(np.asarray(tokens.shape, np.int64).tobytes())
    h.update(np.ascontiguousarray(tokens, np.int64).tobytes())
    h.update(np.ascontiguousarray(mask, np.bool_).tobytes())
    return h.digest()


@dataclass
class _Saved:
    rows: int
    k: list[np.ndarray]
    v: list[np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)


@dataclass
class PrefillStats:
    """Rows of the last prompt: reused from the live cache, restored from a saved prefix, computed."""

    reused: int = 0
    restored: int = 0
    computed: int = 0


@dataclass
class PromptCache:
    """What the live backbone cache holds, and saved prefixes; `prefill` uses both."""

    max_bytes: int = 512 * 2**20
    live: list[tuple[bytes, int]] = field(default_factory=list)  # (key, rows) per chunk, in order
    live_h: np.ndarray | None = None  # the last hidden state after all live chunks
    saved: OrderedDict[tuple[bytes, ...], _Saved] = field(default_factory=OrderedDict)
    last: PrefillStats = field(default_factory=PrefillStats)

    def clear(self) -> None:
        self.live, self.live_h = [], None
        self.saved.clear()

    def prefill(
        self,
        step: Callable[[np.ndarray, np.ndarray, np.ndarray], Any],
        to_host: Callable[[Any], np.ndarray],
        cache: KVCache,
        chunks: Sequence[Chunk],
        *,
        pin: int = 0,
        reuse: bool = True,
    ) -> np.ndarray:
        """Bring ``cache`` to the rows of ``chunks`` and return the last row's hidden state ``[1, d]``.

        ``step(tokens, mask, positions)`` prefills one chunk at the cache's length and returns its
        last hidden state; ``pin`` leading chunks are saved as a prefix for later prompts.
        Without ``reuse`` every chunk is computed (a traced run)."""
        if not reuse:
            self.live, self.live_h = [], None
        keys = [chunk_key(t, m) for t, m in chunks]
        sizes = [len(t) for t, _ in chunks]
        common = 0
        while common < min(len(keys), len(self.live)) and self.live[common] == (keys[common], sizes[common]):
            common += 1
        if common == len(keys) and self.live_h is not None and len(self.live) == len(keys):
            cache.length = sum(sizes)  # the same prompt again (a retry): nothing to compute
            self.last = PrefillStats(reused=cache.length)
            return self.live_h
        common = min(common, len(keys) - 1)  # the last chunk is computed: its hidden state is needed
        stats = PrefillStats(reused=sum(sizes[:common]))
        best = max((n for n in range(common + 1, len(keys)) if reuse and tuple(keys[:n]) in self.saved), default=0)
        if best:
            saved = self.saved[tuple(keys[:best])]
            self.saved.move_to_end(tuple(keys[:best]))
            cache.write_rows(saved.k, saved.v)
            common, stats = best, PrefillStats(restored=saved.rows)
        else:
            cache.length = stats.reused
        self.live = list(zip(keys[:common], sizes[:common]))
        self.live_h = None
        h: Any = None
        for (tokens, mask), key, size in zip(chunks[common:], keys[common:], sizes[common:]):
            start = cache.length
            h = step(tokens, mask, np.arange(start, start + size))
            self.live.append((key, size))
            stats.computed += size
        self.live_h = to_host(h)
        self.last = stats
        if pin and tuple(keys[:pin]) not in self.saved and pin < len(keys):
            self._save(tuple(keys[:pin]), sum(sizes[:pin]), cache)
        return self.live_h

    def _save(self, key: tuple[bytes, ...], rows: int, cache: KVCache) -> None:
        k, v = cache.read_rows(rows)
        entry = _Saved(rows, k, v)
        if entry.nbytes > self.max_bytes:
            return
        self.saved[key] = entry
        while sum(s.nbytes for s in self.saved.values()) > self.max_bytes:
            self.saved.popitem(last=False)
