"""Registers the ``typical-p`` logit processor."""

from __future__ import annotations

from ccsm_core import hookimpl
from ccsm_core.errors import UsageError


def typical_p(p: float = 0.9):
    """Keep the tokens whose surprise is closest to the entropy, up to probability mass ``p``."""
    import numpy as np

    if not 0 < float(p) <= 1:
        raise UsageError(f"typical-p must be in (0, 1], got {p!r}")

    def apply(tokens, logits):
        x = logits.astype(np.float64)
        logp = x - x.max() - np.log(np.exp(x - x.max()).sum())
        probs = np.exp(logp)
        entropy = -(probs * np.where(probs > 0, logp, 0)).sum()
        order = np.argsort(np.abs(-logp - entropy), kind="stable")
        keep = np.cumsum(probs[order]) - probs[order] < p
        out = np.full_like(logits, -np.inf)
        out[order[keep]] = logits[order[keep]]
        return out

    return apply


@hookimpl
def register_samplers(register):
    register("typical-p", typical_p, kind="processor", summary="locally typical sampling")
