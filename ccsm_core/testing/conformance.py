"""The backend conformance suite: every contract op compared with the NumPy reference.

Run it against a backend with one class::

    from ccsm_core.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        backend_name = "my-backend"
        backend_options = {"threads": 1}   # optional

Tolerances: float32 ops ``rtol=RTOL, atol=ATOL``; matmuls against quantized weights are compared
with the NumPy result on the dequantized weight, within ``QUANT_TOL`` of the output's scale
(backends may quantize activations for quantized dot products, as GGML does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import pytest

from ..backends.numpy_backend import NumpyBackend
from ..tensors import TensorData, f32_to_bf16

RTOL, ATOL = 1e-4, 1e-5
QUANT_TOL = 2e-2
QUANT_TYPES = ("F16", "BF16", "Q8_0", "Q4_0")


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


T = TypeVar("T")


def read_in_turns(readers: Sequence[Iterator[T]]) -> list[list[T]]:
    """Everything each reader yields, the readers taking turns one item each until all end
    (how a server's clients read a shared batch)."""
    got: list[list[T]] = [[] for _ in readers]
    live = list(range(len(readers)))
    while live:
        for i in list(live):
            item = next(readers[i], None)
            if item is None:
                live.remove(i)
            else:
                got[i].append(item)
    return got


def recording_logits(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[np.ndarray]]:
    """Every text `Completer`'s logits from now on (``monkeypatch`` undoes it), by completer, in
    the order they were given."""
    from ..textgen import Completer

    seen: dict[int, list[np.ndarray]] = {}
    advance = Completer.advance

    def recording(self: Completer, logits: np.ndarray, **kw: Any) -> Any:
        seen.setdefault(id(self), []).append(np.array(logits))
        return advance(self, logits, **kw)

    monkeypatch.setattr(Completer, "advance", recording)
    return seen


def quantized(name: str, w: np.ndarray, dtype: str) -> TensorData:
    """``w`` stored as ``dtype`` (F16, BF16 or any type `gguf.quants` can quantize)."""
    if dtype == "F16":
        return TensorData(name, w.shape, "F16", w.astype(np.float16))
    if dtype == "BF16":
        return TensorData(name, w.shape, "BF16", f32_to_bf16(w))
    import gguf
    from gguf import quants

    raw = quants.quantize(w, gguf.GGMLQuantizationType[dtype])
    return TensorData(name, w.shape, dtype, raw)


class BackendConformance:
    """Subclass with ``backend_name`` to check a backend op by op against NumPy."""

    backend_name: ClassVar[str] = "numpy"
    backend_options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def be(self):
        from ..backends import get_backend

        backend = get_backend(self.backend_name, **self.backend_options)
        yield backend
        close = getattr(backend, "close", None)
        if close is not None:
            close()

    @pytest.fixture
    def ref(self):
        return NumpyBackend()

    @pytest.fixture
    def rng(self):
        return np.random.default_rng(1234)

    def check(self, got: np.ndarray, want: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
        got = np.asarray(got)
        assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

    # -- data in and out ---------------------------------------------------------------------
    def test_roundtrip(self, be, rng):
        x = _rand(rng, 3, 5, 7)
        self.check(be.to_numpy(be.asarray(x)), x, 0, 0)
        assert be.shape(be.asarray(x)) == (3, 5, 7)

    def test_weight_f32(self, be, rng):
        w = _rand(rng, 6, 4)
        self.check(be.to_numpy(be.weight(w)), w, 0, 0)
        self.check(be.to_numpy(be.weight(TensorData("w", (6, 4), "F32", w))), w, 0, 0)

    def test_zeros_write_read(self, be, rng):
        buf = be.zeros((8, 2, 3))
        a, b = _rand(rng, 3, 2, 3), _rand(rng, 2, 2, 3)
        buf = be.write(buf, be.asarray(a), 0)
        buf = be.write(buf, be.asarray(b), 3)
        got = be.to_numpy(be.slice(buf, 0, 0, 5))
        self.check(got, np.concatenate([a, b]), 0, 0)
        # writes persist across evaluations, and a later write is visible to later reads
        c = _rand(rng, 1, 2, 3)
        buf = be.write(buf, be.asarray(c), 5)
        got = be.to_numpy(be.slice(buf, 0, 0, 6))
        self.check(got, np.concatenate([a, b, c]), 0, 0)
        self.check(be.to_numpy(be.slice(buf, 0, 6, 8)), np.zeros((2, 2, 3), np.float32), 0, 0)

    def test_write_at_tensor_rows(self, be, rng):
        buf = be.zeros((6, 2, 4))
        a = _rand(rng, 2, 2, 4)
        buf = be.write(buf, be.asarray(a), be.asarray(np.array([3, 4], np.int32)))
        want = np.zeros((6, 2, 4), np.float32)
        want[3:5] = a
        self.check(be.to_numpy(be.slice(buf, 0, 0, 6)), want, 0, 0)

    def test_float16_buffer_attention(self, be, ref, rng):
        """A float16 KV cache: writes round to half precision; attention reads it as float32
        (backends may compute attention over it in half precision, as llama.cpp does)."""
        k, v, q = _rand(rng, 5, 2, 16), _rand(rng, 5, 2, 16), _rand(rng, 1, 4, 16)
        kb, vb = be.zeros((8, 2, 16), "float16"), be.zeros((8, 2, 16), "float16")
        kb, vb = be.write(kb, be.asarray(k), 0), be.write(vb, be.asarray(v), 0)
        k16, v16 = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
        self.check(be.to_numpy(be.slice(kb, 0, 0, 5)), k16, 0, 0)
        mask = np.zeros((1, 5), np.float32)
        mask[0, 4] = -np.inf
        got = be.attention(be.asarray(q), be.slice(kb, 0, 0, 5), be.slice(vb, 0, 0, 5), be.asarray(mask), 0.25)
        self.check(be.to_numpy(got), ref.attention(q, k16, v16, mask, 0.25), 2e-3, 2e-3)

    def test_write_other_axis(self, be, rng):
        buf = be.zeros((2, 6))
        a = _rand(rng, 2, 2)
        buf = be.write(buf, be.asarray(a), 3, axis=1)
        want = np.zeros((2, 6), np.float32)
        want[:, 3:5] = a
        self.check(be.to_numpy(buf), want, 0, 0)

    def test_lazy_chain_single_eval(self, be, ref, rng):
        x, w = _rand(rng, 4, 16), _rand(rng, 8, 16)
        y = be.silu(be.add(be.matmul(be.asarray(x), be.weight(w)), be.asarray(x[:, :8])))
        want = ref.silu(ref.add(ref.matmul(x, w), x[:, :8]))
        self.check(be.to_numpy(y), want)
        self.check(be.to_numpy(y), want)  # evaluating twice gives the same

    # -- elementwise -------------------------------------------------------------------------
    @pytest.mark.parametrize("op", ["silu", "gelu", "elu", "softmax"])
    def test_unary(self, be, ref, rng, op):
        x = _rand(rng, 5, 33) * 3
        self.check(be.to_numpy(getattr(be, op)(be.asarray(x))), getattr(ref, op)(x))

    def test_swiglu(self, be, ref, rng):
        g, u = _rand(rng, 5, 33) * 3, _rand(rng, 5, 33)
        self.check(be.to_numpy(be.swiglu(be.asarray(g), be.asarray(u))), ref.mul(ref.silu(g), u))

    def test_gelu_tanh(self, be, ref, rng):
        x = _rand(rng, 5, 33) * 3
        self.check(be.to_numpy(be.gelu(be.asarray(x), approximate=True)), ref.gelu(x, approximate=True))

    @pytest.mark.parametrize("shapes", [((4, 6), (4, 6)), ((4, 6), (1, 6)), ((3, 4, 6), (3, 4, 1)), ((4, 6), (6,))])
    @pytest.mark.parametrize("op", ["add", "mul"])
    def test_binary(self, be, ref, rng, op, shapes):
        a, b = _rand(rng, *shapes[0]), _rand(rng, *shapes[1])
        self.check(be.to_numpy(getattr(be, op)(be.asarray(a), be.asarray(b))), getattr(ref, op)(a, b))

    def test_scale_sum(self, be, ref, rng):
        x = _rand(rng, 3, 4, 5)
        self.check(be.to_numpy(be.scale(be.asarray(x), 0.37)), ref.scale(x, 0.37))
        for axis in (0, 1, 2):
            self.check(be.to_numpy(be.sum(be.asarray(x), axis)), ref.sum(x, axis))

    # -- layers ------------------------------------------------------------------------------
    def test_embedding(self, be, ref, rng):
        table = _rand(rng, 50, 8)
        ids = np.array([3, 0, 49, 3], np.int32)
        self.check(be.to_numpy(be.embedding(be.weight(table), be.asarray(ids))), ref.embedding(table, ids), 0, 0)

    @pytest.mark.parametrize("rows", [1, 7])
    def test_matmul(self, be, ref, rng, rows):
        x, w = _rand(rng, rows, 64), _rand(rng, 48, 64)
        self.check(be.to_numpy(be.matmul(be.asarray(x), be.weight(w))), ref.matmul(x, w), 1e-4, 1e-4)

    def test_matmul_batched(self, be, ref, rng):
        x, w = _rand(rng, 2, 3, 32), _rand(rng, 16, 32)
        self.check(be.to_numpy(be.matmul(be.asarray(x), be.weight(w))), ref.matmul(x, w), 1e-4, 1e-4)

    @pytest.mark.parametrize("dtype", QUANT_TYPES)
    def test_matmul_quantized(self, be, rng, dtype):
        x, w = _rand(rng, 3, 256), _rand(rng, 64, 256)
        t = quantized("w", w, dtype)
        want = x @ t.numpy().T
        got = be.to_numpy(be.matmul(be.asarray(x), be.weight(t)))
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= QUANT_TOL * np.max(np.abs(want))

    @pytest.mark.parametrize("dtype", QUANT_TYPES)
    def test_embedding_quantized(self, be, rng, dtype):
        t = quantized("emb", _rand(rng, 10, 64), dtype)
        ids = np.array([9, 2, 2], np.int32)
        self.check(be.to_numpy(be.embedding(be.weight(t), be.asarray(ids))), t.numpy()[ids], 1e-6, 1e-6)

    def test_rms_norm(self, be, ref, rng):
        x, w = _rand(rng, 5, 32), _rand(rng, 32)
        self.check(be.to_numpy(be.rms_norm(be.asarray(x), be.weight(w), 1e-5)), ref.rms_norm(x, w, 1e-5))

    def test_layer_norm(self, be, ref, rng):
        x, w, b = _rand(rng, 5, 32) + 2, _rand(rng, 32), _rand(rng, 32)
        got = be.layer_norm(be.asarray(x), be.weight(w), be.weight(b), 1e-5)
        self.check(be.to_numpy(got), ref.layer_norm(x, w, b, 1e-5))

    @pytest.mark.parametrize("interleaved", [True, False])
    def test_rope(self, be, ref, rng, interleaved):
        from ..models.config import LlamaConfig

        x = _rand(rng, 6, 4, 64)
        pos = np.array([0, 1, 2, 100, 1000, 2047], np.int32)
        freqs = LlamaConfig(1, 4, 2, 256, 8).rope_freqs()
        got = be.rope(be.asarray(x), be.asarray(pos), freqs, interleaved)
        # backends may build angles by repeated multiplication (GGML): 1e-3 absolute at pos 2047
        self.check(be.to_numpy(got), ref.rope(x, pos, freqs, interleaved), 1e-4, 1e-3)
        # plain frequencies announced by their base: a backend may derive them itself
        plain = LlamaConfig(1, 4, 2, 256, 8, rope_base=10000.0, scale_factor=None).rope_freqs()
        got = be.rope(be.asarray(x), be.asarray(pos), plain, interleaved, base=10000.0)
        self.check(be.to_numpy(got), ref.rope(x, pos, plain, interleaved), 1e-4, 1e-3)

    @pytest.mark.parametrize("heads", [(4, 4), (4, 2), (8, 1)])
    def test_attention(self, be, ref, rng, heads):
        h, kv = heads
        q, k, v = _rand(rng, 3, h, 16), _rand(rng, 7, kv, 16), _rand(rng, 7, kv, 16)
        pos = np.array([4, 5, 6])
        mask = np.where(np.arange(7)[None, :] <= pos[:, None], 0.0, -np.inf).astype(np.float32)
        got = be.attention(be.asarray(q), be.asarray(k), be.asarray(v), be.asarray(mask), 0.25)
        self.check(be.to_numpy(got), ref.attention(q, k, v, mask, 0.25))
        got = be.attention(be.asarray(q), be.asarray(k), be.asarray(v), None, 0.25)
        self.check(be.to_numpy(got), ref.attention(q, k, v, None, 0.25))

    @pytest.mark.parametrize(
        "stride,dilation,groups", [(1, 1, 1), (2, 1, 1), (1, 3, 1), (4, 1, 1), (1, 1, 4), (2, 1, 8)]
    )
    def test_conv1d(self, be, ref, rng, stride, dilation, groups):
        cin, cout, k = 8, 8, 5
        x, w, b = _rand(rng, cin, 40), _rand(rng, cout, cin // groups, k), _rand(rng, cout)
        got = be.conv1d(be.asarray(x), be.weight(w), be.weight(b), stride, dilation, groups)
        self.check(be.to_numpy(got), ref.conv1d(x, w, b, stride, dilation, groups), 1e-4, 1e-4)
        got = be.conv1d(be.asarray(x), be.weight(w), None, stride, dilation, groups)
        self.check(be.to_numpy(got), ref.conv1d(x, w, None, stride, dilation, groups), 1e-4, 1e-4)

    @pytest.mark.parametrize("stride,groups,k", [(1, 1, 3), (4, 1, 8), (5, 1, 10), (2, 8, 4), (3, 2, 5)])
    def test_conv_transpose1d(self, be, ref, rng, stride, groups, k):
        cin, cout = 8, 8
        x, w, b = _rand(rng, cin, 9), _rand(rng, cin, cout // groups, k), _rand(rng, cout)
        got = be.conv_transpose1d(be.asarray(x), be.weight(w), be.weight(b), stride, groups)
        self.check(be.to_numpy(got), ref.conv_transpose1d(x, w, b, stride, groups), 1e-4, 1e-4)

    # -- shape ops ---------------------------------------------------------------------------
    @pytest.mark.parametrize("mode", ["constant", "replicate"])
    def test_pad(self, be, ref, rng, mode):
        x = _rand(rng, 3, 10)
        self.check(be.to_numpy(be.pad(be.asarray(x), 1, 4, 2, mode)), ref.pad(x, 1, 4, 2, mode), 0, 0)
        self.check(be.to_numpy(be.pad(be.asarray(x), 0, 1, 0, mode)), ref.pad(x, 0, 1, 0, mode), 0, 0)

    def test_concat_reshape_transpose_slice(self, be, ref, rng):
        a, b = _rand(rng, 2, 3, 4), _rand(rng, 2, 5, 4)
        c = be.concat([be.asarray(a), be.asarray(b)], axis=1)
        self.check(be.to_numpy(c), ref.concat([a, b], 1), 0, 0)
        r = be.reshape(c, (2, 32))
        self.check(be.to_numpy(r), ref.reshape(ref.concat([a, b], 1), (2, 32)), 0, 0)
        t = be.transpose(be.asarray(a), (2, 0, 1))
        self.check(be.to_numpy(t), ref.transpose(a, (2, 0, 1)), 0, 0)
        s = be.slice(be.asarray(b), 1, 1, 4)
        self.check(be.to_numpy(s), ref.slice(b, 1, 1, 4), 0, 0)
        self.check(
            be.to_numpy(be.add(be.transpose(be.asarray(a), (0, 2, 1)), be.asarray(np.ones((2, 4, 3), np.float32)))),
            a.transpose(0, 2, 1) + 1,
            1e-6,
            1e-6,
        )

    def test_capture_replays_like_eager(self, be, ref, rng):
        """Optional ``capture``: replays equal eager runs, buffer writes included."""
        if not hasattr(be, "capture"):
            pytest.skip(f"{self.backend_name} has no capture (optional)")
        w = _rand(rng, 8, 6)
        wb, buf = be.weight(w), be.zeros((4, 8))

        def step(x, ids):
            y = be.add(be.matmul(x, wb), be.asarray(np.ones((1, 8), np.float32)))  # a constant input
            written = be.write(buf, y, 2)
            return [be.slice(written, 0, 2, 3), be.embedding(wb, ids)]

        cap = be.capture(step, _rand(rng, 1, 6), np.array([1], np.int32))
        for k in range(3):
            x, ids = _rand(rng, 1, 6), np.array([k + 3], np.int32)
            row, emb = cap(x, ids)
            self.check(row, x @ w.T + 1, 1e-4, 1e-4)
            self.check(emb, w[[k + 3]], 0, 0)
            self.check(be.to_numpy(be.slice(buf, 0, 2, 3)), x @ w.T + 1, 1e-4, 1e-4)  # the write happened

    @pytest.mark.parametrize("dtype", ("F32", *QUANT_TYPES))
    @pytest.mark.parametrize("group", [1, 2])
    def test_matmul_rows_is_each_group_alone(self, be, rng, dtype, group):
        """Optional ``matmul_rows``: every group of rows gets exactly its result alone."""
        if not hasattr(be, "matmul_rows"):
            pytest.skip(f"{self.backend_name} computes batches one stream at a time (no matmul_rows)")
        x, w = _rand(rng, 5 * group, 256), _rand(rng, 48, 256)
        wb = be.weight(w if dtype == "F32" else quantized("w", w, dtype))
        got = be.to_numpy(be.matmul_rows(be.asarray(x), wb, group=group))
        alone = [be.to_numpy(be.matmul(be.asarray(x[i : i + group]), wb)) for i in range(0, len(x), group)]
        np.testing.assert_array_equal(got, np.concatenate(alone))

    # -- a whole model -----------------------------------------------------------------------
    @pytest.mark.parametrize("temperature", [0.0, 0.9])
    def test_tiny_csm_batch_is_each_stream_alone(self, be, temperature):
        """Streams generated together (more than the slots, joining and leaving between frames)
        give exactly the frames and logits each gives alone with the same seed."""
        from ..batching import FrameBatch
        from ..generator import FrameSampler, GenerationSettings, Generator, Segment
        from ..models.csm import CSM
        from .models import TINY_CONFIG, tiny_csm_tensors

        class Tok:
            bos_id, eos_id, vocab_size = 1, 2, 128

            def encode(self, text, add_special=True):
                return [ord(c) % 120 + 3 for c in text]

        model = CSM(be, TINY_CONFIG, tiny_csm_tensors(TINY_CONFIG, seed=5))
        ctx = [Segment(1, "Before.", codes=np.arange(32 * 4).reshape(32, 4) % 2048)]
        jobs = [(f"Line number {i}." * (1 + i % 3), i % 2, ctx if i % 2 else []) for i in range(5)]

        def settings(i):
            return GenerationSettings(max_audio_ms=320 + 160 * i, temperature=temperature, topk=50, seed=i)

        def stream(i, batch):
            seen: list[np.ndarray] = []
            gen = Generator(model, Tok())
            s = settings(i)
            text, speaker, context = jobs[i]
            chunks = gen.plan(text, speaker, context, s)
            sampler = FrameSampler(s, TINY_CONFIG.audio_vocab_size, 32, lambda n, x: seen.append(np.array(x)))
            return batch.frames(gen, chunks, sampler, s.max_frames), seen

        alone = []
        for i in range(len(jobs)):
            logits: list[np.ndarray] = []
            gen = Generator(model, Tok())
            frames = gen.generate(
                *jobs[i], settings(i), trace=lambda n, x, lg=logits: lg.append(np.array(x)) if n[:6] == "logits" else 0
            )
            alone.append((frames, np.stack(logits)))
        batch = FrameBatch(model, slots=3)
        iters = [stream(i, batch) for i in range(len(jobs))]
        got = read_in_turns([it for it, _ in iters])
        assert batch.steps < sum(len(f) for f, _ in alone)  # streams did share steps
        for i, (frames, want) in enumerate(alone):
            np.testing.assert_array_equal(np.stack(got[i]), frames)
            np.testing.assert_array_equal(np.stack(iters[i][1]), want)

    @pytest.mark.parametrize("arch", ["llama", "gemma3", "mistral3"])
    @pytest.mark.parametrize("temperature", [0.0, 0.9])
    def test_tiny_text_batch_is_each_sequence_alone(self, be, tmp_path, monkeypatch, arch, temperature):
        """Completions decoded together (more than the slots, joining and leaving between
        tokens, long prompts prefilled a chunk a step while others decode, windows past one step
        of 256 rows) give exactly the tokens, text and logits each gives alone; sliding windows
        (gemma3) and attention temperature (mistral3) too."""
        from ..loading.text import load_text_model
        from ..text_batch import TextBatch
        from ..textgen import TextSession, TextSettings
        from .text_models import write_tiny_text

        loaded = load_text_model(write_tiny_text(tmp_path / "t.gguf", arch, seed=3, context=640), be)
        seen = recording_logits(monkeypatch)
        prompts = [[0] + [(5 * i + j) % 16 + 2 for j in range(n)] for i, n in enumerate((3, 300, 17, 250, 40))]
        settings = [
            TextSettings(max_tokens=m, temperature=temperature, topk=18, top_p=1.0, min_p=0.0, seed=i, stop=stop)
            for i, (m, stop) in enumerate(((40, ()), (12, ("ab",)), (30, ()), (20, ()), (9, ())))
        ]
        alone = []
        for p, st in zip(prompts, settings):
            seen.clear()
            c = TextSession(loaded, context=600, batch=64).generate(p, st)
            alone.append((c, np.stack(next(iter(seen.values())))))
        seen.clear()
        batch = TextBatch(loaded, slots=3, context=600, prefill_batch=64)
        streams = [batch.stream(p, st) for p, st in zip(prompts, settings)]
        texts = ["".join(pieces) for pieces in read_in_turns(streams)]
        assert batch.steps < sum(len(c.ids) for c, _ in alone)  # sequences did share steps
        assert batch.shared_chunks > 0  # prompts of several chunks ran a chunk a step beside decoding
        logits = list(seen.values())  # one Completer per sequence, in the order they joined
        assert len(logits) == len(streams)
        for i, (c, want) in enumerate(alone):
            got = streams[i].last
            assert (got.ids, got.text, got.finish_reason) == (c.ids, c.text, c.finish_reason)
            assert texts[i] == c.text
            np.testing.assert_array_equal(np.stack(logits[i]), want)

    def test_tiny_csm_frames_match_reference(self, be, ref):
        """Greedy frames of a tiny random CSM equal the NumPy backend's, logits within 1e-3."""
        from ..generator import GenerationSettings, Generator
        from ..models.csm import CSM
        from .models import TINY_CONFIG, tiny_csm_tensors

        class Tok:
            bos_id, eos_id, vocab_size = 1, 2, 128

            def encode(self, text, add_special=True):
                return [ord(c) for c in text]

        tensors = tiny_csm_tensors(TINY_CONFIG, seed=3)
        runs = []
        for backend in (ref, be):
            logits: list[np.ndarray] = []
            gen = Generator(CSM(backend, TINY_CONFIG, tensors), Tok())
            frames = gen.generate(
                "Hi there",
                0,
                (),
                GenerationSettings(max_audio_ms=400, topk=1, temperature=1.0),
                trace=lambda n, x, logits=logits: logits.append(np.array(x)) if n.startswith("logits") else None,
            )
            runs.append((frames, np.stack(logits)))
        (f_ref, l_ref), (f_be, l_be) = runs
        np.testing.assert_array_equal(f_be, f_ref)
        np.testing.assert_allclose(l_be, l_ref, atol=1e-3, rtol=0)
