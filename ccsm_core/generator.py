"""Conversation prompts and frame-by-frame generation, as the original ``generator.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .builtin.samplers import SPEECH_DEFAULTS
from .context import check_audio_fits, fit_context
from .errors import GenerationError, UsageError
from .models.csm import CSM
from .models.csm_fused import MAX_FUSED_TOPK, FusedPlan
from .models.llama import KVCache
from .models.mimi_blocks import encode_blocks
from .models.prompt_cache import Chunk, PromptCache
from .sampling import SamplerChain, SamplingSettings, sampling_with

FRAME_MS = 80  # one Mimi frame at 12.5 Hz


@dataclass
class Segment:
    """One conversation turn: who spoke, what they said, and (for context) how it sounded.

    ``audio`` is 24 kHz mono float32 (encoded with Mimi); ``codes`` are Mimi codes ``[32, T]``
    if the audio is already encoded.
    """

    speaker: int
    text: str
    audio: np.ndarray | None = None
    codes: np.ndarray | None = None


def check_turn(speaker: Any, text: Any) -> None:
    if isinstance(speaker, bool) or not isinstance(speaker, (int, np.integer)) or speaker < 0:
        raise UsageError(f"speaker must be a non-negative integer, got {speaker!r}", "give a speaker id of 0 or more")
    if not isinstance(text, str) or not text.strip():
        raise UsageError("text is empty", "give the words to speak")


@dataclass(init=False, slots=True)
class GenerationSettings:
    """Limits for one utterance, and how its codes are sampled (the original's defaults).

    ``sampling`` starts from ``SPEECH_DEFAULTS`` (in ``ccsm_core.builtin.samplers``); its fields may
    also be given as keywords, over it: ``GenerationSettings(temperature=0.7, seed=1)``.
    """

    max_audio_ms: float
    min_frames: int  # no end-of-audio frame before this many frames
    guard_special: bool  # ban audio ids 2048..2050 (the original does not)
    context_strategy: str  # how to drop turns that do not fit (see ccsm_core.context)
    sampling: SamplingSettings

    def __init__(
        self,
        *,
        max_audio_ms: float = 90_000,
        min_frames: int = 0,
        guard_special: bool = False,
        context_strategy: str = "recency",
        sampling: SamplingSettings | None = None,
        **sampling_values: Any,
    ) -> None:
        self.max_audio_ms, self.min_frames, self.guard_special = max_audio_ms, min_frames, guard_special
        self.context_strategy = context_strategy
        self.sampling = sampling_with("GenerationSettings", sampling, SPEECH_DEFAULTS, sampling_values)

    @property
    def max_frames(self) -> int:
        if not (self.max_audio_ms > 0):
            raise UsageError(f"max audio length must be > 0 ms, got {self.max_audio_ms}", "give --max-audio-ms above 0")
        return int(self.max_audio_ms / FRAME_MS)


def make_sampler(s: GenerationSettings, audio_vocab_size: int = 2051) -> SamplerChain:
    """The sampler chain for ``s`` (validates every sampling option)."""
    sampling = s.sampling
    if s.guard_special:
        bias = dict(sampling.logit_bias or {})
        for i in range(2048, audio_vocab_size):
            bias[i] = -np.inf
        sampling = replace(sampling, logit_bias=bias)
    return sampling.to_chain()


class FrameSampler:
    """One stream's code picker: its sampler chain, random state and per-codebook history.

    ``sampler(codebook, logits) -> code``; no end-of-audio frame before ``min_frames`` (the
    caller sets ``frame_no``)."""

    def __init__(
        self,
        s: GenerationSettings,
        audio_vocab_size: int,
        codebooks: int,
        trace: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.chain = make_sampler(s, audio_vocab_size)
        self.rng = s.sampling.rng()
        self.history = np.zeros((codebooks, 64), np.int64)  # codes picked so far, per codebook
        self.counts = [0] * codebooks  # (a row grows by doubling: no list copied per pick)
        self.min_frames, self.trace = s.min_frames, trace
        self.frame_no = 0
        self._plan: FusedPlan | None = None
        self._planned = False

    def __call__(self, i: int, logits: np.ndarray) -> int:
        if self.trace is not None:
            self.trace(f"logits{i}", logits)
        if i == 0 and self.frame_no < self.min_frames:
            logits = logits.copy()
            logits[0] = -np.inf  # an all-zero frame needs code 0 in codebook 0
        code = self.chain(self.history[i, : self.counts[i]], logits, self.rng)
        self.record(i, code)
        return code

    def record(self, i: int, code: int) -> None:
        """Note ``code`` as codebook ``i``'s pick (the fused decoder picks without a call)."""
        n = self.counts[i]
        if n == self.history.shape[1]:
            self.history = np.concatenate([self.history, np.zeros_like(self.history)], axis=1)
        self.history[i, n] = code
        self.counts[i] = n + 1

    def fused_plan(self) -> FusedPlan | None:
        """The chain as a `FusedPlan` when the decoder can sample it inside its graph (bans by a
        ``-inf`` bias, temperature, top-k up to `MAX_FUSED_TOPK`, the built-in ``categorical``
        or ``greedy`` sampler; no trace), else None."""
        if not self._planned:  # the chain never changes: looked at once
            self._plan = None if self.trace is not None else fused_plan(self.chain)
            self._planned = True
        return self._plan


_FUSABLE = ("logit-bias", "temperature", "top-k")  # processors the fused decoder runs, in chain order


def fused_plan(chain: SamplerChain) -> FusedPlan | None:
    """``chain`` as a `FusedPlan`, or None if a part of it is not one the fused decoder runs."""
    described = [getattr(p, "describes", None) for p in chain.processors]
    kind = getattr(chain.sampler, "describes", (None, None))[0]
    parts: list[tuple[str, Any]] = [p for p in described if p is not None and p[0] in _FUSABLE]
    if kind not in ("categorical", "greedy") or len(parts) != len(described):
        return None
    names = [name for name, _ in parts]
    if names != sorted(set(names), key=_FUSABLE.index):  # each once, in the chain's usual order
        return None
    values = dict(parts)
    if any(b != -np.inf for b in values.get("logit-bias", {}).values()):
        return None
    greedy = kind == "greedy"
    k = 1 if greedy else values.get("top-k")
    if k is None or k > MAX_FUSED_TOPK:
        return None
    return FusedPlan(tuple(sorted(values.get("logit-bias", {}))), values.get("temperature"), k, greedy)


class Generator:
    """Turns text (plus context turns) into CSM frames; ``mimi`` makes audio from them."""

    def __init__(self, model: CSM, tokenizer: Any, mimi: Any = None) -> None:
        self.model, self.tokenizer, self.mimi = model, tokenizer, mimi
        self.ncb = model.cfg.audio_num_codebooks
        self.dropped: list[int] = []  # context turns the last prompt left out (indices)
        self.prompt_cache = PromptCache()  # backbone rows kept for prompts that start the same
        self._caches: tuple[KVCache, KVCache] | None = None
        self.batch: Any = None  # a `ccsm_core.batching.FrameBatch` shared with other generators

    # -- prompt ------------------------------------------------------------------------------
    def text_rows(self, speaker: int, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``[bos] + tokens("[speaker]text") + [eos]`` in the text column."""
        tok = self.tokenizer
        ids = [tok.bos_id] + tok.encode(f"[{speaker}]{text}", add_special=False) + [tok.eos_id]
        vocab = self.model.cfg.text_vocab_size
        if max(ids) >= vocab:
            raise GenerationError(
                f"tokenizer id {max(ids)} is outside the model's text vocabulary ({vocab})",
                "use the tokenizer that belongs to this model",
            )
        tokens = np.zeros((len(ids), self.ncb + 1), np.int64)
        mask = np.zeros_like(tokens, dtype=bool)
        tokens[:, -1], mask[:, -1] = ids, True
        return tokens, mask

    def audio_rows(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mimi codes ``[32, T]`` plus the all-zero end-of-audio row, in the audio columns."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.ncb:
            raise UsageError(
                f"context codes must have shape [{self.ncb}, T], got {list(codes.shape)}",
                "use codes written by ccsm encode or --codes-out",
            )
        if codes.size and (codes.min() < 0 or codes.max() >= self.model.cfg.audio_vocab_size):
            raise UsageError(
                "context codes are outside the audio vocabulary",
                "use codes written by ccsm encode or --codes-out with this model's codec",
            )
        t = codes.shape[1]
        tokens = np.zeros((t + 1, self.ncb + 1), np.int64)
        mask = np.zeros_like(tokens, dtype=bool)
        tokens[:t, :-1] = codes.T
        mask[:, :-1] = True
        return tokens, mask

    def segment_codes(self, seg: Segment) -> np.ndarray | None:
        if seg.codes is not None:
            return np.asarray(seg.codes)
        if seg.audio is None:
            return None
        if self.mimi is None:
            raise UsageError(
                "context audio needs the Mimi codec, which this model was loaded without",
                "load a model with Mimi weights, or pass Mimi codes",
            )
        audio = np.asarray(seg.audio, np.float32).reshape(-1)
        check_audio_fits(audio.size, self.mimi.samples_per_frame, self.model.cfg.backbone.max_seq_len)
        return encode_blocks(self.mimi, audio)

    def turn_rows(self, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """One context turn: its text rows, then its audio rows and end row (if it has audio)."""
        check_turn(seg.speaker, seg.text)
        parts = [self.text_rows(seg.speaker, seg.text)]
        codes = self.segment_codes(seg)
        if codes is not None:
            parts.append(self.audio_rows(codes))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def prompt_chunks(
        self,
        text: str,
        speaker: int,
        context: Sequence[Segment] = (),
        *,
        voice: Sequence[Segment] = (),
        budget: int | None = None,
        strategy: str = "recency",
        keep_newest: bool = True,
    ) -> list[Chunk]:
        """The prefill rows as chunks: one per context turn (text, audio, end row), then the new text.

        ``voice`` turns come first and are never dropped. With ``budget`` (rows), other turns that
        do not fit are dropped by ``strategy``; their indices in ``context`` are left in
        ``self.dropped``; the newest turn stays unless ``keep_newest`` is off."""
        check_turn(speaker, text)
        target = self.text_rows(speaker, text)
        turns = [(seg, self.turn_rows(seg)) for seg in (*voice, *context)]
        self.dropped = []
        if budget is not None and turns:
            fitted = fit_context(
                [seg for seg, _ in turns],
                [len(r[0]) for _, r in turns],
                budget - len(target[0]),
                target_speaker=speaker,
                strategy=strategy,
                keep=len(voice),
                keep_newest=keep_newest,
            )
            self.dropped = [i - len(voice) for i in fitted.dropped]
            turns = [t for i, t in enumerate(turns) if i not in set(fitted.dropped)]
        return [r for _, r in turns] + [target]

    def prompt(
        self,
        text: str,
        speaker: int,
        context: Sequence[Segment] = (),
        *,
        voice: Sequence[Segment] = (),
        budget: int | None = None,
        strategy: str = "recency",
    ) -> tuple[np.ndarray, np.ndarray]:
        """`prompt_chunks` joined: the prompt's ``tokens, mask`` ``[S, 33]``."""
        chunks = self.prompt_chunks(text, speaker, context, voice=voice, budget=budget, strategy=strategy)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def caches(self) -> tuple[KVCache, KVCache]:
        """The backbone and decoder caches, made once and kept (with the steps captured on them)."""
        if self._caches is None:
            self._caches = self.model.new_caches()
        return self._caches

    # -- generation --------------------------------------------------------------------------
    def plan(
        self,
        text: str,
        speaker: int,
        context: Sequence[Segment],
        s: GenerationSettings,
        *,
        voice: Sequence[Segment] = (),
        keep_newest: bool = True,
    ) -> list[Chunk]:
        """The prompt's chunks for ``s``, checked to leave room for ``s.max_frames`` frames."""
        max_frames = s.max_frames
        limit = self.model.cfg.backbone.max_seq_len
        chunks = self.prompt_chunks(
            text,
            speaker,
            context,
            voice=voice,
            budget=limit - max_frames - 1,
            strategy=s.context_strategy,
            keep_newest=keep_newest,
        )
        rows = sum(len(c[0]) for c in chunks)
        if rows >= limit - max_frames:
            raise GenerationError(
                f"prompt of {rows} rows plus {max_frames} frames does not fit the context of {limit}",
                "shorten the text or context, or lower --max-audio-ms",
            )
        return chunks

    def frames(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        progress: Callable[[int, int], None] | None = None,
        trace: Callable[[str, Any], None] | None = None,
        *,
        voice: Sequence[Segment] = (),
        keep_newest: bool = True,
    ) -> Iterator[np.ndarray]:
        """Yield frames (32 codes each) until the all-zero frame or the length limit.

        The prompt is prefilled chunk by chunk (`prompt_chunks`); rows of leading chunks the
        backbone cache already holds are reused, and the ``voice`` turns' rows are saved for
        later prompts (`PromptCache`): the frames are the same either way. With a ``batch``
        (a `ccsm_core.batching.FrameBatch`) set, the frames are computed together with the
        batch's other streams: the same frames. The prompt is checked (and a batch joined) when
        called, the frames computed as they are read."""
        s = settings or GenerationSettings()
        chunks = self.plan(text, speaker, context, s, voice=voice, keep_newest=keep_newest)
        sampler = FrameSampler(s, self.model.cfg.audio_vocab_size, self.ncb, trace)
        if self.batch is not None and trace is None:
            return self.batch.frames(self, chunks, sampler, s.max_frames, pin=len(voice), progress=progress)
        return self._frames_alone(chunks, s.max_frames, sampler, progress, trace, pin=len(voice))

    def prefill(self, chunks: list[Chunk], pin: int = 0, trace: Callable[[str, Any], None] | None = None) -> np.ndarray:
        """Bring the backbone cache to the prompt ``chunks`` (reusing rows it holds, saving the
        ``pin`` leading chunks' rows); the last row's hidden state ``[1, d]``. A traced run
        computes (and so traces) every row."""
        model = self.model
        bb_cache, _ = self.caches()

        def step(tokens: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> Any:
            return model.backbone_step(tokens, mask, positions, bb_cache, trace)

        return self.prompt_cache.prefill(step, model.be.to_numpy, bb_cache, chunks, pin=pin, reuse=trace is None)

    def _frames_alone(
        self,
        chunks: list[Chunk],
        max_frames: int,
        sampler: FrameSampler,
        progress: Callable[[int, int], None] | None,
        trace: Callable[[str, Any], None] | None,
        pin: int,
    ) -> Iterator[np.ndarray]:
        model = self.model
        bb_cache, dec_cache = self.caches()
        last_h = self.prefill(chunks, pin, trace)
        row = np.zeros((1, self.ncb + 1), np.int64)  # a frame's backbone row: its codes, text column off
        row_mask = np.zeros_like(row, dtype=bool)
        row_mask[0, :-1] = True
        for frame_no in range(max_frames):
            sampler.frame_no = frame_no
            if frame_no == 0:
                codes = model.frame(last_h, sampler, dec_cache, trace)
            else:  # one row per frame
                h, c0 = model.backbone_row(row, row_mask, bb_cache)
                codes = model.frame(h, sampler, dec_cache, c0_logits=c0)
            if not codes.any():
                break
            if progress is not None:
                progress(frame_no + 1, max_frames)
            yield codes
            row = row.copy()
            row[0, :-1] = codes

    def generate(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        **kw: Any,
    ) -> np.ndarray:
        """All frames as ``[T, 32]`` int64."""
        frames = list(self.frames(text, speaker, context, settings, **kw))
        return np.stack(frames) if frames else np.zeros((0, self.ncb), np.int64)
