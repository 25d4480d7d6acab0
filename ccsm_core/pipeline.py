"""Speaking a text or a dialogue: one path from words to (watermarked) audio and timestamps.

`speak` splits each line into sentences and generates them one after another. Sentence ``k``
sees the voices' turns (always kept), the caller's context turns and the sentences before it
(text and generated frames) as context, as many as the 2048-row budget allows, pruned by the
settings' context strategy. Its frame budget follows its length (`sentence_budget`); a sentence
that reaches that budget without ending is generated again with the next seed (``retries``).
All frames, with short pauses between sentences (Mimi's codes for silence), are decoded by one
Mimi stream, so sentence joins have no resets. Events report each sentence as it goes; the
last, `Finished`, holds the whole audio (watermarked when a marker is given), every frame and
the timestamps. `ccsm run`, `ccsm dialogue` and `Speech.say` are thin callers.

A speech lane with a shared `ccsm_core.mimi_lanes.MimiLanes` (`speak_many`, the server) queues
its frames there and decodes them together with the other jobs': at the latest at each sentence
end, and with ``stream`` at the run's next turn (after the frame's `Progress`); events and audio
are the same as alone.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import GenerationError
from .generator import FRAME_MS, GenerationSettings, Segment
from .mimi_lanes import MimiLane
from .sentences import split_sentences
from .timestamps import Cue

BUDGET_BASE_MS = 2000  # a sentence's frame budget: this plus BUDGET_MS_PER_CHAR per character
BUDGET_MS_PER_CHAR = 120  # about twice a calm speaking pace (~14 characters a second)
DECODE_CHUNK = 8  # frames per Mimi stream step (at most 16 transformer positions: attended in place)


def sentence_budget(text: str) -> int:
    """Frames a sentence may take before it counts as runaway (about twice its spoken length)."""
    return math.ceil((BUDGET_BASE_MS + BUDGET_MS_PER_CHAR * len(text)) / FRAME_MS)


@dataclass(frozen=True)
class Line:
    """One turn to speak: ``text`` by ``speaker`` (default: the voice's speaker, else 0), in ``voice``."""

    text: str
    speaker: int | None = None
    voice: Any = None  # a ccsm_core.voices.Voice


@dataclass(frozen=True)
class SpeakOptions:
    """How lines become sentences and audio.

    ``pause_ms`` of silence between sentences (whole 80-ms frames); ``retries`` per runaway
    sentence (sampled runs only); ``history`` caps the earlier sentences kept as context (None:
    as many as fit); ``split`` off speaks each line as one utterance; ``stream`` yields audio
    frame by frame (then a runaway sentence is kept, not retried: its audio is already out).
    ``parallel`` > 0 makes the sentences independent (each gets the voices and the given
    context, not the sentences before it) and generates up to that many together
    (`ccsm_core.batching`); sentence ``i`` then uses seed ``seed + i``, its retry ``k`` seed
    ``seed + k * sentences + i``.
    """

    pause_ms: float = 320
    retries: int = 2
    history: int | None = None
    split: bool = True
    language: str = "en"
    stream: bool = False
    parallel: int = 0  # > 0: independent sentences, up to this many generated together

    @property
    def pause_frames(self) -> int:
        return max(0, round(self.pause_ms / FRAME_MS))


@dataclass(frozen=True)
class Sentence:
    index: int  # in the whole output
    turn: int  # index of its line
    text: str
    speaker: int
    voice: str | None  # the voice's name


@dataclass(frozen=True)
class SentenceStarted:
    sentence: Sentence
    start: float  # seconds into the output
    budget: int  # frames


@dataclass(frozen=True)
class Audio:
    """Decoded samples (24 kHz float32; watermarked block by block when streamed with a marker), in output order."""

    samples: np.ndarray


@dataclass(frozen=True)
class Progress:
    """A frame of sentence ``sentence`` was generated (``frame`` of at most ``budget``)."""

    sentence: int
    frame: int
    budget: int


@dataclass(frozen=True)
class SentenceDone:
    sentence: Sentence
    start: float
    end: float
    frames: np.ndarray  # [T, 32]
    attempts: int  # 1 + retries used
    seed: int | None  # of the kept attempt
    ended: bool  # the model ended it (False: it reached its budget)
    capped: bool  # it reached the caller's max_audio_ms (not its own budget)
    dropped: list[int]  # indices of context turns left out to fit (caller's turns first, then sentences)
    reused_rows: int  # prompt rows taken from the prompt cache (not computed)


@dataclass(frozen=True)
class Finished:
    audio: np.ndarray | None  # the whole output (watermarked if a marker was given)
    frames: np.ndarray  # every frame of the output, pauses included: [T, 32]
    sentences: list[Cue]
    turns: list[Cue]
    seed: int | None  # the first sentence's seed
    watermarked: bool


Event = SentenceStarted | Progress | Audio | SentenceDone | Finished


@dataclass
class _Decoder:
    """One Mimi stream over the whole output (None: frames only); keeps every frame and sample.

    Frames queue in the stream's `ccsm_core.mimi_lanes.MimiLane` (in ``lanes``, shared with
    other jobs, when given; else alone) in chunks of at most `DECODE_CHUNK`, counted from each
    `push`; `take` returns their audio."""

    mimi: Any
    lanes: Any = None  # a MimiLanes
    lane: Any = None
    frames: list[np.ndarray] = field(default_factory=list)
    wave: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mimi is not None:
            self.lane = self.lanes.open() if self.lanes is not None else MimiLane(self.mimi)

    def push(self, frames: np.ndarray, queued: int = 0) -> None:
        """Keep ``frames [k, 32]`` and queue them after everything pushed before (the first
        ``queued`` were queued by `ahead` already)."""
        self.frames.extend(frames)
        self.ahead(frames[queued:])

    def ahead(self, frames: np.ndarray) -> None:
        """Queue ``frames`` (not kept yet: a sentence's frames while it is generated)."""
        if self.lane is not None:
            for i in range(0, len(frames), DECODE_CHUNK):
                self.lane.push(frames[i : i + DECODE_CHUNK])

    def take(self) -> np.ndarray | None:
        """The audio of the frames queued since the last take (None: no audio)."""
        if self.lane is None:
            return None
        wave = self.lane.take()
        if not wave.size:
            return None
        self.wave.append(wave)
        return wave

    def tentative(self) -> None:
        """Frames queued by `ahead` from now on may be dropped by `undo`."""
        if self.lane is not None:
            self.lane.tentative()

    def undo(self) -> None:
        """Drop the frames queued since `tentative` (a sentence generated again)."""
        if self.lane is not None:
            self.lane.undo()

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()

    @property
    def seconds(self) -> float:
        return len(self.frames) * FRAME_MS / 1000


def speak(
    speech: Any,
    lines: Sequence[Line],
    *,
    context: Sequence[Segment] = (),
    settings: GenerationSettings | None = None,
    options: SpeakOptions | None = None,
    marker: Any = None,
    audio: bool = True,
) -> Iterator[Event]:
    """Speak ``lines`` after ``context``; yields events, `Finished` last, and a `Progress`
    after every frame (so a caller can interleave several runs a frame at a time).

    ``speech`` is a `ccsm_core.speech.Speech`; ``marker`` an applied watermark (see
    `ccsm_core.watermark`); ``audio`` False skips Mimi (frames only)."""
    s = settings or GenerationSettings()
    o = options or SpeakOptions()
    if o.stream and marker is not None and audio:  # streamed audio is marked block by block
        from .watermark import mark_stream

        unmarked = speak(speech, lines, context=context, settings=settings, options=options, audio=audio)
        yield from mark_stream(unmarked, marker, speech.sample_rate)
        return
    gen = speech.generator
    mimi = speech.need_mimi() if audio else None
    voice = _voice_turns(lines, speech.mimi)
    sentences = _sentences(lines, o)
    context = [_encoded(gen, seg) for seg in context]
    pause = _silence(mimi, o.pause_frames) if mimi is not None else np.zeros((o.pause_frames, gen.ncb), np.int64)
    base_seed = s.sampling.seed if s.sampling.seed is not None else secrets.randbelow(2**31)
    next_seed = base_seed
    cap = s.max_frames
    greedy = s.sampling.temperature == 0 or s.sampling.sampler == "greedy"
    decoder = _Decoder(mimi, getattr(speech, "mimi_lanes", None))
    history: list[Segment] = []  # the sentences so far, as context turns
    cues: list[Cue] = []

    def start(sent: Sentence, seed: int, budget: int) -> Iterator[np.ndarray]:
        ss = replace(s, max_audio_ms=budget * FRAME_MS, sampling=replace(s.sampling, seed=seed))
        # the voices' turns stay; the caller's and earlier sentences may be dropped to fit
        # (the caller's newest turn stays when there are no earlier sentences)
        kept = history[max(0, len(history) - o.history) :] if o.history is not None else history
        earlier = [] if o.parallel else kept
        return speech.frames(sent.text, sent.speaker, [*context, *earlier], ss, voice=voice, keep_newest=not earlier)

    own_batch = bool(o.parallel) and gen.batch is None
    if own_batch:
        from .batching import FrameBatch

        gen.batch = FrameBatch(gen.model, slots=o.parallel)
    try:
        # parallel sentences all join the batch now; each is read in its turn
        ahead: dict[int, Iterator[np.ndarray]] = {}
        for t in sentences if o.parallel else ():
            ahead[t.index] = start(t, base_seed + t.index, min(sentence_budget(t.text), cap))
        for sent in sentences:
            if sent.index:
                decoder.push(pause)
                if (chunk := decoder.take()) is not None:
                    yield Audio(chunk)
            begin = decoder.seconds
            own = sentence_budget(sent.text)
            budget = min(own, cap)
            yield SentenceStarted(sent, begin, budget)
            attempts = 0
            while True:
                attempts += 1
                if o.parallel:
                    seed = base_seed + (attempts - 1) * len(sentences) + sent.index
                    it = ahead.pop(sent.index) if attempts == 1 else start(sent, seed, budget)
                else:
                    seed, next_seed = next_seed, next_seed + 1
                    it = start(sent, seed, budget)
                may_retry = not o.stream and not greedy and attempts <= o.retries and own <= cap
                if may_retry:  # its queued frames are dropped if it runs away
                    decoder.tentative()
                frames: list[np.ndarray] = []
                for frame in it:
                    frames.append(frame)
                    if o.stream:
                        decoder.push(frame[None])
                    elif len(frames) % DECODE_CHUNK == 0:  # decoded while the sentence goes on
                        decoder.ahead(np.stack(frames[-DECODE_CHUNK:]))
                    yield Progress(sent.index, len(frames), budget)
                    if o.stream and (chunk := decoder.take()) is not None:
                        yield Audio(chunk)
                runaway = len(frames) == budget and own <= cap
                if not runaway or not may_retry:
                    break
                decoder.undo()
            got = np.stack(frames) if frames else np.zeros((0, gen.ncb), np.int64)
            if not o.stream:
                decoder.push(got, queued=len(got) - len(got) % DECODE_CHUNK)
                if (chunk := decoder.take()) is not None:
                    yield Audio(chunk)
            end = decoder.seconds
            cues.append(Cue(len(cues) + 1, begin, end, sent.text, sent.speaker, sent.voice))
            history.append(Segment(sent.speaker, sent.text, codes=got.T))
            yield SentenceDone(
                sent,
                begin,
                end,
                got,
                attempts,
                seed,
                ended=len(frames) < budget,
                capped=len(frames) == budget and own > cap,
                dropped=list(gen.dropped),
                reused_rows=gen.prompt_cache.last.reused + gen.prompt_cache.last.restored,
            )
    finally:
        if own_batch:
            gen.batch = None
        decoder.close()
    full = None if mimi is None else np.concatenate([np.zeros(0, np.float32), *decoder.wave])
    marked = False
    if full is not None and marker is not None and not o.stream and full.size:
        full = marker.embed(full, speech.sample_rate)
        marked = True
    all_frames = np.stack(decoder.frames) if decoder.frames else np.zeros((0, gen.ncb), np.int64)
    yield Finished(full, all_frames, cues, _turn_cues(cues, sentences), base_seed, marked)


def _voice_turns(lines: Sequence[Line], mimi: Any) -> list[Segment]:
    """The turns of every voice (in order of first use), as context segments of its speaker."""
    seen: set[str] = set()
    out: list[Segment] = []
    for line in lines:
        v = line.voice
        if v is None or v.name in seen:
            continue
        seen.add(v.name)
        v.check_codec(mimi)
        out += v.segments(line.speaker if line.speaker is not None else v.speaker)
    return out


def _sentences(lines: Sequence[Line], o: SpeakOptions) -> list[Sentence]:
    out: list[Sentence] = []
    for t, line in enumerate(lines):
        speaker = line.speaker if line.speaker is not None else (line.voice.speaker if line.voice is not None else 0)
        pieces = split_sentences(line.text, o.language) if o.split else [" ".join(line.text.split())]
        name = line.voice.name if line.voice is not None else None
        first = len(out)
        out.extend(Sentence(first + i, t, p, speaker, name) for i, p in enumerate(pieces))
    if not out:
        raise GenerationError("nothing to say", "give some text")
    return out


def _encoded(gen: Any, seg: Segment) -> Segment:
    """A context turn with its audio encoded once (it is part of every sentence's prompt)."""
    if seg.codes is not None or seg.audio is None:
        return seg
    return Segment(seg.speaker, seg.text, codes=gen.segment_codes(seg))


def _silence(mimi: Any, frames: int) -> np.ndarray:
    """Mimi's codes for ``frames`` frames of silence ``[frames, 32]`` (decoded, they fade out)."""
    if frames == 0:
        return np.zeros((0, mimi.num_codebooks), np.int64)
    return mimi.encode(np.zeros(frames * mimi.samples_per_frame, np.float32)).T


def _turn_cues(cues: list[Cue], sentences: list[Sentence]) -> list[Cue]:
    """One cue per line: from its first sentence's start to its last one's end."""
    out: list[Cue] = []
    last_turn = -1
    for cue, sent in zip(cues, sentences):
        if out and sent.turn == last_turn:
            out[-1] = replace(out[-1], end=cue.end, text=f"{out[-1].text} {cue.text}")
        else:
            out.append(replace(cue, index=len(out) + 1))
        last_turn = sent.turn
    return out
