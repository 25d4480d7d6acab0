"""Parity with the original CSM and Mimi: helpers and a suite any backend can run.

The recordings live in the repository's ``tests/fixtures/csm-tiny`` (see its README); a backend
plugin points ``fixture_dir`` at them::

    class TestMyBackendParity(FixtureParity):
        backend_name = "my-backend"
        fixture_dir = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"

Tolerances are the project's: logits within 1e-3 of the original's, greedy frames identical,
Mimi codes identical, decoded audio within 1e-4, streaming equal to one-shot within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest


def fixture_context(ref: Any, case: str, spec: dict) -> list:
    """The case's context turn with the Mimi frames the original put in the prompt."""
    from ..generator import Segment

    ctx = spec["context"]
    if not ctx:
        return []
    tokens, mask = ref[f"{case}_prompt_tokens"], ref[f"{case}_prompt_mask"]
    audio_rows = tokens[mask[:, :32].all(axis=1)][:-1]  # recorded Mimi frames, without the end row
    return [Segment(ctx["speaker"], ctx["text"], codes=audio_rows[:, :32].T)]


def forced_logits(model: Any, tokenizer: Any, text: str, speaker: int, frames: np.ndarray) -> np.ndarray:
    """Logits of every codebook while feeding the given frames (teacher forcing): ``[T*32, vocab]``."""
    from ..generator import Generator

    tokens, mask = Generator(model, tokenizer).prompt(text, speaker)
    bb, dec = model.new_caches()
    positions, out = np.arange(len(tokens)), []
    for frame in frames:
        h = model.backbone_step(tokens, mask, positions, bb)

        def forced(i: int, logits: np.ndarray, frame: np.ndarray = frame) -> int:
            out.append(logits)
            return int(frame[i])

        model.frame(h, forced, dec)
        tokens = np.zeros((1, 33), np.int64)
        tokens[0, :32] = frame
        mask = np.zeros_like(tokens, bool)
        mask[0, :32] = True
        positions = positions[-1:] + 1
    return np.stack(out)


class FixtureParity:
    """CSM (both recorded cases) and Mimi on ``backend_name`` against the original's recordings."""

    backend_name: ClassVar[str] = "numpy"
    backend_options: ClassVar[dict[str, Any]] = {}
    fixture_dir: ClassVar[Path]

    @pytest.fixture(scope="class")
    @classmethod
    def ref(cls):
        return np.load(cls.fixture_dir / "reference.npz")

    @pytest.fixture(scope="class")
    @classmethod
    def be(cls):
        from ..backends import get_backend

        return get_backend(cls.backend_name, **cls.backend_options)

    @pytest.mark.parametrize("case", ["text", "ctx"])
    def test_csm_matches_original(self, be, ref, case):
        from ..generator import GenerationSettings, Generator
        from ..loading.csm import load_csm

        cases = json.loads((self.fixture_dir / "cases.json").read_text())
        spec = cases["cases"][case]
        lm = load_csm(self.fixture_dir, be)
        logits: list[np.ndarray] = []
        settings = GenerationSettings(max_audio_ms=cases["n_frames"] * 80, topk=1, temperature=1.0)
        frames = Generator(lm.model, lm.tokenizer).generate(
            spec["text"],
            spec["speaker"],
            fixture_context(ref, case, spec),
            settings,
            trace=lambda n, x: logits.append(np.array(x)) if n.startswith("logits") else None,
        )
        np.testing.assert_array_equal(frames, ref[f"{case}_frames"])
        got = np.stack(logits).reshape(ref[f"{case}_logits"].shape)
        assert np.max(np.abs(got - ref[f"{case}_logits"])) <= 1e-3

    def test_mimi_matches_original(self, be):
        from ..loading.mimi import load_mimi

        mref = np.load(self.fixture_dir / "mimi_reference.npz")
        mimi = load_mimi(self.fixture_dir / "mimi.safetensors", self.fixture_dir / "mimi_config.json", be)
        np.testing.assert_array_equal(mimi.encode(mref["enc_in"][0, 0]), mref["enc_codes"][0])
        wave = mimi.decode(mref["dec_codes"][0])
        assert np.max(np.abs(wave - mref["dec_out"][0, 0])) <= 1e-4
        dec = mimi.stream_decoder()
        codes = mref["dec_codes"][0]
        streamed = np.concatenate([dec.step(codes[:, t : t + 1]) for t in range(codes.shape[1])])
        assert np.max(np.abs(streamed - wave)) <= 1e-5
        uneven = mimi.stream_decoder()
        cuts = [0, 3, 4, codes.shape[1]]
        chunks = np.concatenate([uneven.step(codes[:, a:b]) for a, b in zip(cuts, cuts[1:])])
        assert np.max(np.abs(chunks - wave)) <= 1e-5


def assert_prompt_cache_exact(backend: str, fixture_dir: Path) -> None:
    """On ``backend``, a voice's reused rows (live in the cache, or restored from the saved
    prefix after another voice ran) give exactly the frames of a fresh run, greedy and sampled."""
    from ..generator import GenerationSettings, Generator, Segment
    from ..loading.csm import load_csm

    ref = np.load(fixture_dir / "reference.npz")
    codes = ref["ctx_frames"].T
    ann = [Segment(1, "A voice prompt.", codes=codes), Segment(1, "And more.", codes=codes[:, :4])]
    bob = [Segment(0, "Another voice.", codes=codes[:, ::-1])]
    for sampling in ({"temperature": 0}, {"temperature": 0.9, "topk": 50}):
        settings = GenerationSettings(max_audio_ms=400, seed=3, **sampling)
        lm = load_csm(fixture_dir, backend)
        want = Generator(lm.model, lm.tokenizer).generate("Cached or not.", 1, (), settings, voice=ann)
        gen = Generator(lm.model, lm.tokenizer)
        runs = [gen.generate("Cached or not.", 1, (), settings, voice=ann)]
        runs.append(gen.generate("Cached or not.", 1, (), settings, voice=ann))
        assert gen.prompt_cache.last.reused > 0
        gen.generate("Someone else.", 0, (), settings, voice=bob)
        runs.append(gen.generate("Cached or not.", 1, (), settings, voice=ann))
        assert gen.prompt_cache.last.restored > 0
        for got in runs:
            np.testing.assert_array_equal(got, want)
