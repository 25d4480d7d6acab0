"""bf16 / f16 / quantized MLX weights against the NumPy backend running the *same rounded weights*.

The reference gets, for every tensor, exactly the values MLX holds (``to_numpy(weight(t))``), so
what remains is MLX's arithmetic: 16-bit weights are multiplied in their own type (activations
rounded to it), quantized ones with float32 activations on the CPU. Tolerances are on the
teacher-forced logits of the fixture model's 10 reference frames (logits peak at about 5.5);
measured figures are in the README."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ccsm_mlx.backend import MlxBackend

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.loading.csm import load_csm
from ccsm_core.testing.parity import forced_logits as teacher_forced

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"

# options -> (max |logit difference| against NumPy on the same rounded weights, share of the
# 320 teacher-forced greedy choices that must agree); measured values in the comments
TOLERANCES = [
    ({"dtype": "f32"}, 1e-4, 1.0),  # 2.2e-6, all
    ({"dtype": "f16"}, 1e-2, 1.0),  # 2.9e-3, all
    ({"dtype": "bf16"}, 0.1, 0.95),  # 2.5e-2, 97.5 %
    ({"quantize": 8}, 1e-4, 1.0),  # 1.9e-6, all (f32 scales, f32 activations)
    ({"quantize": 4}, 1e-4, 1.0),  # 1.9e-6, all
    ({"dtype": "bf16", "quantize": 4}, 0.1, 0.95),  # 3.5e-2, 99.1 %
    ({"dtype": "f16", "quantize": 8}, 2e-2, 1.0),  # 5.0e-3, all
]


class RoundedNumpy(NumpyBackend):
    """NumPy computing with exactly the weights an MLX backend holds (dequantized to float32)."""

    def __init__(self, mlx: MlxBackend) -> None:
        super().__init__()
        self.mlx = mlx

    def weight(self, t):
        return self.mlx.to_numpy(self.mlx.weight(t))


def forced_logits(path, be, frames: np.ndarray) -> np.ndarray:
    """Logits of every codebook of ``frames``, feeding those frames back (teacher forcing)."""
    lm = load_csm(path, be)
    return teacher_forced(lm.model, lm.tokenizer, "Hello from CSM.", 0, frames)


@pytest.fixture(scope="module")
def frames():
    return np.load(FIXTURE / "reference.npz")["text_frames"]


def greedy_agreement(got: np.ndarray, want: np.ndarray) -> float:
    """Share of positions where the greedy (argmax) choice is the same."""
    return float((got.argmax(-1) == want.argmax(-1)).mean())


@pytest.mark.parametrize("options,tol,agree", TOLERANCES, ids=[str(o) for o, _, _ in TOLERANCES])
def test_logits_match_numpy_on_the_same_rounded_weights(options, tol, agree, frames):
    got = forced_logits(FIXTURE, MlxBackend(cache="off", **options), frames)
    want = forced_logits(FIXTURE, RoundedNumpy(MlxBackend(cache="off", **options)), frames)
    assert np.max(np.abs(got - want)) <= tol
    assert greedy_agreement(got, want) >= agree


def test_rounding_really_happens(frames):
    """The reference does see rounded weights: bf16 + 4-bit logits move away from float32."""
    f32 = forced_logits(FIXTURE, NumpyBackend(), frames)
    q4 = forced_logits(FIXTURE, RoundedNumpy(MlxBackend(cache="off", dtype="bf16", quantize=4)), frames)
    assert 0.1 < np.max(np.abs(q4 - f32)) < 2.0  # measured 1.07 (4-bit, groups of 64/32)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_gguf_blocks_repacked_exactly(tmp_path, frames, qtype):
    """A q8_0 / q4_0 GGUF runs on MLX's quantized matmul with the file's exact values."""
    from ccsm_core.loading.csm_gguf import convert_csm

    path = convert_csm(FIXTURE, tmp_path / f"{qtype}.gguf", qtype)
    want = forced_logits(path, NumpyBackend(), frames)  # NumPy dequantizes the blocks
    got = forced_logits(path, MlxBackend(cache="off"), frames)
    assert np.max(np.abs(got - want)) <= 1e-4
    assert greedy_agreement(got, want) == 1.0
