"""SentencePiece-style merging as llama.cpp runs it (``tokenizer.ggml.model == "llama"``).

The text (spaces already replaced by ``▁``) starts as one symbol per character; the adjacent
pair whose concatenation is a vocabulary token with the highest score merges first (ties: the
leftmost); a final symbol that is not a token is emitted as its UTF-8 bytes (``<0xXX>`` tokens).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def byte_token_ids(token_to_id: Mapping[str, int], unk_id: int | None) -> list[int | None]:
    """Byte value -> id of its ``<0xXX>`` token (else the one-byte token, else ``unk_id``)."""
    out: list[int | None] = []
    for b in range(256):
        tid = token_to_id.get(f"<0x{b:02X}>")
        if tid is None:
            tid = token_to_id.get(chr(b) if b < 0x80 else bytes([b]).decode("utf-8", "surrogateescape"))
        out.append(tid if tid is not None else unk_id)
    return out


def spm_encode(
    text: str, token_to_id: Mapping[str, int], scores: Sequence[float], byte_ids: Sequence[int | None]
) -> list[int]:
    """Ids of ``text`` by llama.cpp's SPM merge (``llm_tokenizer_spm_session``)."""
    n = len(text)
    if n == 0:
        return []
    length = [1] * n
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    heap: list[tuple[float, int, int, int]] = []

    def add(left: int, right: int) -> None:
        if left < 0 or right < 0:
            return
        size = length[left] + length[right]
        tid = token_to_id.get(text[left : left + size])
        if tid is not None:
            heapq.heappush(heap, (-scores[tid], left, right, size))

    for i in range(1, n):
        add(i - 1, i)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
            continue  # stale: one side has merged since
        length[left] = size
        length[right] = 0
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        add(prev[left], left)
        add(left, nxt[left])

    out: list[int] = []
    i = 0
    while i != -1:
        piece = text[i : i + length[i]]
        tid = token_to_id.get(piece)
        if tid is not None:
            out.append(tid)
        else:
            for b in piece.encode("utf-8", "surrogateescape"):
                if byte_ids[b] is not None:
                    out.append(byte_ids[b])  # type: ignore[arg-type]
        i = nxt[i]
    return out
