"""Error-correcting code for the payload: two 16-bit halves, each a random 75-bit codeword, ML-decoded.

``encode(payload)`` gives 150 code bits (0/1): the codeword of the high half, then that of the
low half, each drawn from a fixed pseudo-random codebook of 2^16 words of 75 bits.
``decode(soft)`` takes 150 soft values (positive means "bit 1 more likely") and returns, for each
half, the codeword of highest correlation: maximum-likelihood decoding, exact, by one matrix
product per half (2^16 x 75), a few milliseconds.

ML decoding of a random code needs about 2 dB less signal than soft Viterbi on the K=7
rate-1/3 code it replaced (simulated: 90 % of frames right at z = 10.7 instead of 13). A payload
is always decoded; whether a mark is *there* is the p-value's call, and whether the decoded
payload is the one embedded is tested afterwards on ``CHECK_BITS`` keyed check signs derived
from it (`check_signs`): for a wrong payload they are independent of the audio, so the chance
that a wrong payload passes is bounded like any false positive (75 check bits: enough that a
payload found under 20 dB noise passes the 1e-4 check; with 45, many did not).
"""

from __future__ import annotations

import numpy as np

PAYLOAD_BITS = 32
HALF_BITS = 16
WORD_BITS = 75  # code bits per half
CODE_BITS = 2 * WORD_BITS
CHECK_BITS = 75  # keyed check signs derived from the payload (see check_signs)
ALL_BITS = CODE_BITS + CHECK_BITS
_SEED = 0x63C5_3A11  # the codebook is fixed (the key spreads it); changing it breaks old marks

_book: np.ndarray | None = None


def codebook() -> np.ndarray:
    """The (2^16, 75) codebook as float32 +-1 (built once, about 20 MB)."""
    global _book
    if _book is None:
        rng = np.random.default_rng(_SEED)
        bits = rng.integers(0, 2, size=(1 << HALF_BITS, WORD_BITS), dtype=np.int8)
        _book = (2.0 * bits - 1.0).astype(np.float32)
    return _book


def check_payload(payload: int) -> int:
    """``payload`` as an int, or a ValueError when it does not fit in 32 bits."""
    if isinstance(payload, bool) or not isinstance(payload, (int, np.integer)):
        raise ValueError(f"payload must be an integer, not {type(payload).__name__}")
    payload = int(payload)
    if not 0 <= payload < (1 << PAYLOAD_BITS):
        raise ValueError(f"payload {payload:#x} does not fit in {PAYLOAD_BITS} bits (0 .. 0xFFFFFFFF)")
    return payload


def _halves(payload: int) -> tuple[int, int]:
    return payload >> HALF_BITS, payload & ((1 << HALF_BITS) - 1)


def encode(payload: int) -> np.ndarray:
    """The 150 code bits (uint8) of a 32-bit payload."""
    book = codebook()
    hi, lo = _halves(check_payload(payload))
    return (np.concatenate([book[hi], book[lo]]) > 0).astype(np.uint8)


def decode(soft: np.ndarray, check: bool = True) -> int:
    """ML decode of ``CODE_BITS`` soft values (>0 means 1): the payload of highest correlation.

    Always returns a payload (``check`` is kept for compatibility and ignored): whether a mark
    is present is decided by the detector's p-value, which accounts for every payload.
    """
    soft = np.asarray(soft, dtype=np.float32).reshape(2, WORD_BITS)
    book = codebook()
    hi = int(np.argmax(book @ soft[0]))
    lo = int(np.argmax(book @ soft[1]))
    return (hi << HALF_BITS) | lo


def decode_many(soft: np.ndarray) -> list[int]:
    """`decode` of each row of ``soft`` (H, CODE_BITS), in one matrix product per half."""
    soft = np.asarray(soft, dtype=np.float32).reshape(-1, 2, WORD_BITS)
    book = codebook()
    hi = np.argmax(soft[:, 0] @ book.T, axis=1)  # (H, 2^16): rows are contiguous for argmax
    lo = np.argmax(soft[:, 1] @ book.T, axis=1)
    return [(int(h) << HALF_BITS) | int(q) for h, q in zip(hi, lo)]


def check_signs(key: bytes, payload: int) -> np.ndarray:
    """CHECK_BITS keyed +-1 signs of ``payload`` (a hash of key and payload).

    They travel beside the code; the detector decodes the payload from the code alone and then
    tests these signs once. For any other payload they are independent random signs, so the
    chance that a wrong payload passes the test is bounded like any false positive."""
    import hashlib

    digest = hashlib.blake2b(
        check_payload(payload).to_bytes(4, "big"), key=bytes(key)[:64], digest_size=16, person=b"ccsm-wm-check"
    ).digest()
    bits = np.unpackbits(np.frombuffer(digest * 5, dtype=np.uint8))[:CHECK_BITS]
    return bits.astype(np.float64) * 2 - 1
