"""Text to speech end to end: a CSM generator plus the Mimi codec, from one model source."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backends import get_backend
from .backends.base import Backend
from .errors import GenerationError, ModelError
from .generator import GenerationSettings, Generator, Segment
from .pipeline import Event, Line, SpeakOptions, speak


@dataclass
class Speech:
    """A loaded speech model: ``generator`` makes frames, ``mimi`` turns them into audio."""

    generator: Generator
    mimi: Any
    source: Path
    demo: bool = False
    sample_rate: int = 24_000
    mimi_lanes: Any = None  # a MimiLanes shared with other lanes (None: Mimi decodes alone)

    def need_mimi(self) -> Any:
        if self.mimi is None:
            raise ModelError(
                f"no Mimi codec weights found for {self.source}",
                "put mimi.safetensors beside the model, pass --mimi FILE, or cache "
                "kyutai/moshiko-pytorch-bf16 with `ccsm download`",
            )
        return self.mimi

    def lane(self, batch: Any = None, mimi_lanes: Any = None) -> Speech:
        """Another `Speech` on the same loaded model and codec, with its own caches (one per
        concurrent request); with ``batch`` (a `ccsm_core.batching.FrameBatch`) its frames are
        computed together with the batch's other streams, with ``mimi_lanes`` (a
        `ccsm_core.mimi_lanes.MimiLanes`) its audio is decoded together with theirs."""
        gen = Generator(self.generator.model, self.generator.tokenizer, self.mimi)
        gen.batch = batch
        return Speech(gen, self.mimi, self.source, demo=self.demo, sample_rate=self.sample_rate, mimi_lanes=mimi_lanes)

    def frames(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        voice: Sequence[Segment] = (),
        keep_newest: bool = True,
    ) -> Iterator[np.ndarray]:
        """Frames of 32 codes as they are generated (the demo never samples special ids);
        ``voice`` turns come before ``context`` and are never pruned (see `Generator.frames`)."""
        if self.demo:
            settings = replace(settings or GenerationSettings(), guard_special=True)
        return self._checked(
            self.generator.frames(text, speaker, context, settings, progress, voice=voice, keep_newest=keep_newest)
        )

    def _checked(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            if self.mimi is not None and frame.max() >= self.mimi.cardinality:
                raise GenerationError(
                    f"the model sampled audio id {int(frame.max())}, which Mimi cannot decode "
                    f"(the original code would crash here too)",
                    "pass --guard-special-codes",
                )
            yield frame

    def say(
        self,
        text: str,
        *,
        voice: Any = None,
        speaker: int | None = None,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        options: SpeakOptions | None = None,
        marker: Any = None,
    ) -> Iterator[Event]:
        """Speak ``text`` of any length (split into sentences) in ``voice`` (a saved `Voice`),
        after ``context``: `SentenceStarted`, `Audio`, `SentenceDone` events, then `Finished`
        with the whole audio, frames and timestamps (see `ccsm_core.pipeline`)."""
        return speak(
            self, [Line(text, speaker, voice)], context=context, settings=settings, options=options, marker=marker
        )

    def dialogue(
        self,
        lines: Sequence[Line],
        *,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        options: SpeakOptions | None = None,
        marker: Any = None,
    ) -> Iterator[Event]:
        """Speak ``lines`` (`Line`: text, speaker, voice) in turn, each after the ones before."""
        return speak(self, lines, context=context, settings=settings, options=options, marker=marker)

    def utterance(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One generation as the original: frames ``[T, 32]`` and their one-shot Mimi decode."""
        mimi = self.need_mimi()
        frames = list(self.frames(text, speaker, context, settings, progress))
        if not frames:
            return np.zeros((0, 32), np.int64), np.zeros(0, np.float32)
        codes = np.stack(frames)
        return codes, mimi.decode(codes.T)

    def stream(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        settings: GenerationSettings | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(frame, audio)`` per frame: 1920 samples decoded as soon as the frame exists."""
        decoder = self.need_mimi().stream_decoder()
        for frame in self.frames(text, speaker, context, settings, progress):
            yield frame, decoder.step(frame[:, None])


def load_speech(
    spec: str | None,
    backend: Backend | str | None = None,
    *,
    tokenizer: str | None = None,
    mimi: str | None = None,
    **backend_options: Any,
) -> Speech:
    """Load CSM (+ Mimi if found) from a folder, a ``.gguf`` file, ``demo`` or a cached repo id."""
    from .loading.csm import load_csm
    from .loading.mimi import load_codec
    from .loading.sources import resolve_model
    from .models.mimi import Mimi

    path = resolve_model(spec)
    be = get_backend(backend, **backend_options) if backend is None or isinstance(backend, str) else backend
    loaded = load_csm(path, be, tokenizer=tokenizer)
    codec: Mimi | None
    if loaded.mimi_tensors is not None and not mimi:
        codec = Mimi.from_tensors(be, loaded.mimi_tensors, loaded.mimi_config)
    else:  # a CSM GGUF was read already (files is None): its Mimi, if any, was taken above
        codec = load_codec(path, mimi, be, inside_gguf=loaded.files is not None)
    return Speech(Generator(loaded.model, loaded.tokenizer, codec), codec, path, demo=spec == "demo")
