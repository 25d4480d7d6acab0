"""The answer of a detector."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class WatermarkResult:
    """``present`` is True/False, or None when the input cannot tell (silence, too short).

    ``p_value`` bounds the probability that unmarked audio (or audio marked with another
    key) scores this high; ``score`` is the detector's z statistic; ``payload`` is the
    decoded 32-bit payload when present *and* its check bits confirm it (``payload_p_value``,
    the chance that a wrong payload scores this well on them, below the payload threshold),
    else None: a mark can be found while its payload is too degraded to trust.
    """

    present: bool | None
    score: float
    payload: int | None
    p_value: float
    payload_p_value: float = 1.0  # chance that a wrong payload passes the check this well
    scale: float = 1.0  # time scale found (1.05 = the audio was slowed down by 5 %)
    offset_s: float = 0.0  # where a block starts in the input, modulo the block period
    reason: str = ""
    raw_payload: int | None = None  # unchecked best-effort decode (diagnostics only)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["payload"] = None if self.payload is None else f"0x{self.payload:08X}"
        d["payload_confident"] = self.payload is not None
        d.pop("raw_payload")
        return d
