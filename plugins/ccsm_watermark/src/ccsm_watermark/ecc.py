"""Error-correcting code for the payload: CRC-12 check bits, then a K=7 rate-1/3 convolutional code.

``encode(payload)`` gives 150 code bits (0/1); ``decode(soft)`` runs a soft-decision Viterbi on
150 soft values (positive means "bit 1 more likely") and returns the payload, or ``None`` when
the check bits disagree.
"""

from __future__ import annotations

import numpy as np

PAYLOAD_BITS = 32
CRC_BITS = 12
CRC_POLY = 0x80F  # CRC-12 (x^12 + x^11 + x^3 + x^2 + x + 1)
K = 7  # constraint length
POLYS = (0o133, 0o171, 0o165)
INFO_BITS = PAYLOAD_BITS + CRC_BITS
CODE_BITS = (INFO_BITS + K - 1) * len(POLYS)

_N_STATES = 1 << (K - 1)


def _bits(value: int, n: int) -> list[int]:
    return [(value >> (n - 1 - i)) & 1 for i in range(n)]


def crc(bits: list[int]) -> int:
    """CRC-12 of a bit list (MSB first)."""
    reg = 0
    for b in bits:
        top = ((reg >> (CRC_BITS - 1)) & 1) ^ b
        reg = (reg << 1) & ((1 << CRC_BITS) - 1)
        if top:
            reg ^= CRC_POLY & ((1 << CRC_BITS) - 1)
    return reg


def check_payload(payload: int) -> int:
    """``payload`` as an int, or a ValueError when it does not fit in 32 bits."""
    if isinstance(payload, bool) or not isinstance(payload, (int, np.integer)):
        raise ValueError(f"payload must be an integer, not {type(payload).__name__}")
    payload = int(payload)
    if not 0 <= payload < (1 << PAYLOAD_BITS):
        raise ValueError(f"payload {payload:#x} does not fit in {PAYLOAD_BITS} bits (0 .. 0xFFFFFFFF)")
    return payload


def _info_bits(payload: int) -> list[int]:
    bits = _bits(payload, PAYLOAD_BITS)
    return bits + _bits(crc(bits), CRC_BITS)


def _parity(x: int) -> int:
    return bin(x).count("1") & 1


# output bits for (state, input): state holds the previous K-1 inputs, newest in the MSB
_OUT = np.zeros((_N_STATES, 2, len(POLYS)), dtype=np.int8)
_NEXT = np.zeros((_N_STATES, 2), dtype=np.int64)
for _s in range(_N_STATES):
    for _b in range(2):
        _reg = (_b << (K - 1)) | _s
        _OUT[_s, _b] = [_parity(_reg & p) for p in POLYS]
        _NEXT[_s, _b] = _reg >> 1


def encode(payload: int) -> np.ndarray:
    """The 150 code bits (uint8) of a 32-bit payload."""
    bits = _info_bits(check_payload(payload)) + [0] * (K - 1)
    state, out = 0, []
    for b in bits:
        out.extend(_OUT[state, b])
        state = int(_NEXT[state, b])
    return np.asarray(out, dtype=np.uint8)


_NS = np.arange(_N_STATES)
_IN = _NS >> (K - 2)  # the input bit that leads into each state
_PRED = np.stack([(_NS << 1) & (_N_STATES - 1), ((_NS << 1) & (_N_STATES - 1)) | 1])  # (2, states)
assert np.all(_NEXT[_PRED[0], _IN] == _NS) and np.all(_NEXT[_PRED[1], _IN] == _NS)


def decode(soft: np.ndarray, check: bool = True) -> int | None:
    """Soft Viterbi decode of ``CODE_BITS`` values (>0 means 1); ``None`` if the CRC fails.

    ``check=False`` returns the 32 decoded payload bits whatever the CRC says (diagnostics).
    """
    soft = np.asarray(soft, dtype=np.float64).reshape(-1, len(POLYS))
    signs = 2.0 * _OUT.astype(np.float64) - 1.0  # (states, 2, n)
    # branch signs into each state from each of its two predecessors: (2, states, n)
    into = signs[_PRED, _IN[None, :]]
    metric = np.full(_N_STATES, -np.inf)
    metric[0] = 0.0
    steps = soft.shape[0]
    back = np.zeros((steps, _N_STATES), dtype=np.int8)
    for t in range(steps):
        cand = metric[_PRED] + into @ soft[t]  # (2, states)
        if t >= INFO_BITS:  # tail: only zero inputs are allowed
            cand[:, _IN == 1] = -np.inf
        pick = np.argmax(cand, axis=0)
        metric = cand[pick, _NS]
        back[t] = pick
    state, bits = 0, []
    for t in range(steps - 1, -1, -1):
        bits.append(int(_IN[state]))
        state = int(_PRED[back[t, state], state])
    bits = bits[::-1][:INFO_BITS]
    data, crc_bits = bits[:PAYLOAD_BITS], bits[PAYLOAD_BITS:]
    if check and crc(data) != int("".join(map(str, crc_bits)), 2):
        return None
    return int("".join(map(str, data)), 2)
