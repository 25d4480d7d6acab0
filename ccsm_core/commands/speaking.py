"""What `ccsm run` and `ccsm dialogue` share: generation and output options, and writing a
`ccsm_core.pipeline` run's events to files (audio, codes, subtitles, JSON), each atomically."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ..builtin.samplers import SPEECH_DEFAULTS
from ..errors import UsageError
from ..files import atomic_path, check_output
from .common import Real, input_path, sampling_from, sampling_options

T = TypeVar("T")
MAX_AUDIO_MS = 3_600_000  # one sentence's audio: an hour is far beyond any model's context


def speaking_options(f: Callable[..., T]) -> Callable[..., T]:
    """Output files, sentence handling, limits, sampling, watermark and progress options."""
    options: list[Callable[[Any], Any]] = [
        click.option(
            "--output",
            "-o",
            type=str,
            default=None,
            help="Audio file (.wav/.flac/.ogg) or '-' for raw float32 on stdout. [default: output.wav]",
        ),
        click.option(
            "--stream", is_flag=True, help="Write audio frame by frame while generating (watermarked block by block)."
        ),
        click.option("--pcm16", is_flag=True, help="16-bit PCM WAV instead of 32-bit float."),
        click.option(
            "--sample-rate", type=click.IntRange(min=8000, max=192000), default=None, help="Resample (default 24000)."
        ),
        click.option(
            "--codes-out",
            type=click.Path(dir_okay=False),
            default=None,
            help="Also save every frame (pauses included) as an int .npy array (frames x 32).",
        ),
        click.option("--srt", type=click.Path(dir_okay=False), default=None, help="Subtitles with each cue's times."),
        click.option("--vtt", type=click.Path(dir_okay=False), default=None, help="WebVTT subtitles."),
        click.option(
            "--json", "as_json", is_flag=True, help="Print a JSON summary with each cue's start and end on stdout."
        ),
        click.option(
            "--pause-ms",
            type=Real(0, 10_000),
            default=320,
            show_default=True,
            help="Silence between sentences (whole 80-ms frames).",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0, max=10),
            default=2,
            show_default=True,
            help="New tries (next seed) for a sentence that runs past its length budget without ending.",
        ),
        click.option(
            "--history",
            type=click.IntRange(0, 1_000_000),
            default=None,
            help="Earlier sentences kept as context at most. [default: as many as fit]",
        ),
        click.option("--split/--no-split", default=True, show_default=True, help="Speak sentence by sentence."),
        click.option(
            "--parallel-sentences",
            type=click.IntRange(min=0, max=64),
            default=0,
            show_default=True,
            metavar="N",
            help="Generate up to N sentences together, each without the sentences before it as context "
            "(sentence i takes seed + i); 0: in order, each after the ones before.",
        ),
        click.option("--language", default="en", show_default=True, help="Language of the text, for splitting."),
        click.option(
            "--max-audio-ms",
            type=Real(80, MAX_AUDIO_MS),
            default=90_000,
            show_default=True,
            help="Longest audio of one sentence.",
        ),
        click.option(
            "--context-strategy",
            type=click.Choice(["recency", "importance", "hybrid"]),
            default="recency",
            show_default=True,
            help="Which turns to drop when the context does not fit.",
        ),
        sampling_options(
            SPEECH_DEFAULTS,
            topk_flags=("--topk", "--top-k"),
            sampler=True,
            helps={
                "topk": "Keep the k most likely codes.",
                "top_p": "Nucleus sampling mass (0, 1].",
                "min_p": "Drop codes below p x the top probability.",
                "logit_bias": "Add BIAS to code ID (repeatable; -inf bans).",
                "sampler": "Final sampler by name (default: categorical, or greedy at temperature 0).",
                "seed": "Random seed for reproducible output (each sentence or retry takes the next).",
            },
            extra=[
                click.option(
                    "--min-frames",
                    type=click.IntRange(0, MAX_AUDIO_MS // 80),
                    default=0,
                    show_default=True,
                    help="No end of audio before this many frames.",
                ),
                click.option(
                    "--guard-special-codes", is_flag=True, help="Never sample audio ids 2048-2050 (the original may)."
                ),
            ],
        ),
        click.option(
            "--watermark/--no-watermark",
            default=True,
            show_default=True,
            help="Mark the audio (needs a watermark plugin).",
        ),
        click.option(
            "--watermark-key",
            type=click.Path(dir_okay=False),
            default=None,
            help="Key file for the watermark (default: the plugin's public key, which proves nothing).",
        ),
        click.option("--watermark-method", default=None, help="Watermark method by name (default: the plugin's)."),
        click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@dataclass(frozen=True)
class Plan:
    """What the options ask for, checked before any model loads."""

    settings: Any  # GenerationSettings
    options: Any  # SpeakOptions
    marker: Any  # the applied watermark, or None


def prepare(kw: dict[str, Any]) -> Plan:
    """Output defaults (``output.wav`` unless only codes are asked for; ``-o -`` streams),
    conflicting outputs refused, settings validated, and the watermark picked (none without an
    audio file; a note when streaming skips it)."""
    if kw["output"] is None and kw["codes_out"] is None:
        kw["output"] = "output.wav"
    if kw["output"] == "-":
        kw["stream"] = True  # raw audio on stdout is the streaming format
    _check_outputs(kw)
    plan = Plan(_settings(kw), _options(kw), _marker(kw))
    if kw["stream"] and plan.marker is not None and getattr(plan.marker.marker, "stream", None) is None:
        click.echo(f"note: watermark {plan.marker.name!r} cannot mark streamed output; it is not marked", err=True)
    return plan


def _marker(kw: dict[str, Any]) -> Any:
    from ..watermark import pick_watermarker

    if not kw["watermark"] or kw["output"] is None:
        return None
    if kw["watermark_key"]:
        input_path(kw["watermark_key"], "watermark key file")
    return pick_watermarker(kw["watermark_key"], kw["watermark_method"])


def _settings(kw: dict[str, Any]) -> Any:
    """The `GenerationSettings` of the options (every sampling option validated)."""
    from ..generator import GenerationSettings, make_sampler

    s = GenerationSettings(
        max_audio_ms=kw["max_audio_ms"],
        min_frames=kw["min_frames"],
        guard_special=kw["guard_special_codes"],
        context_strategy=kw["context_strategy"],
        sampling=sampling_from(kw),
    )
    make_sampler(s)
    return s


def _options(kw: dict[str, Any]) -> Any:
    from ..pipeline import SpeakOptions

    return SpeakOptions(
        pause_ms=kw["pause_ms"],
        retries=kw["retries"],
        history=kw["history"],
        split=kw["split"],
        language=kw["language"],
        stream=kw["stream"],
        parallel=kw["parallel_sentences"],
    )


def _check_outputs(kw: dict[str, Any]) -> None:
    from ..audio import audio_format

    if kw["output"] not in (None, "-"):
        audio_format(kw["output"])  # a wrong extension fails now, not after generating
    if kw["output"] == "-" and kw["as_json"]:
        raise UsageError("--json and -o - both write to stdout", "write the audio to a file, or drop --json")
    named = [p for p in (kw["output"], kw["codes_out"], kw["srt"], kw["vtt"]) if p and p != "-"]
    same = {p for p in named if named.count(p) > 1}
    if same:
        raise UsageError(f"{sorted(same)[0]} is given for two outputs", "give each output its own file")
    for flag, key in (("-o", "output"), ("--codes-out", "codes_out"), ("--srt", "srt"), ("--vtt", "vtt")):
        if kw[key] not in (None, "-"):
            check_output(kw[key].replace("{n}", "1"), flag)  # before any model loads


def deliver(
    speech: Any,
    events: Iterator[Any],
    kw: dict[str, Any],
    *,
    cues: str = "sentences",
    split_dir: str | None = None,
    json_lines: bool = False,
) -> None:
    """Consume a pipeline run's events: a progress bar per sentence, notes, then every output
    file, each written atomically. ``json_lines``: the ``--json`` summary on one line."""
    from ..audio import AudioWriter
    from ..pipeline import Audio, Finished, Progress, SentenceDone, SentenceStarted

    output, stream = kw["output"], kw["stream"]
    show = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
    bars: list[Any] = []
    done: Finished | None = None
    notes: list[str] = []

    with _stream_target(output if stream else None) as target:
        writer = None
        if target is not None:
            writer = AudioWriter(target, speech.sample_rate, pcm16=kw["pcm16"], out_rate=kw["sample_rate"])
        try:
            for ev in events:
                if isinstance(ev, Progress):
                    bars[-1].update(ev.frame - bars[-1].n)
                elif isinstance(ev, SentenceStarted):
                    bars.append(_bar(ev, show))
                elif isinstance(ev, Audio) and writer is not None:
                    writer.write(ev.samples)
                elif isinstance(ev, SentenceDone):
                    bars[-1].close()
                    notes += _notes(ev, kw)
                elif isinstance(ev, Finished):
                    done = ev
        finally:
            for b in bars:
                b.close()
            if writer is not None:
                writer.close()
    assert done is not None
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if output is not None and not stream and done.audio is not None:
        _write_audio(output, done.audio, speech.sample_rate, kw)
    if kw["codes_out"]:
        import numpy as np

        with atomic_path(kw["codes_out"]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, done.frames)
    chosen = done.turns if cues == "turns" else done.sentences
    _write_cues(chosen, kw)
    if split_dir and done.audio is not None:
        _split(done, split_dir, speech.sample_rate, kw)
    where = " and ".join(x for x in (output if output != "-" else None, kw["codes_out"]) if x)
    seconds = len(done.frames) * 0.08
    click.echo(
        f"{len(done.frames)} frames ({seconds:.2f} s of audio, {len(done.sentences)} sentence"
        f"{'s' if len(done.sentences) != 1 else ''})" + (f" -> {where}" if where else ""),
        err=True,
    )
    if kw["as_json"]:
        from ..timestamps import to_json

        click.echo(
            json.dumps(
                {
                    "output": output,
                    "frames": int(len(done.frames)),
                    "seconds": round(seconds, 3),
                    "seed": done.seed,
                    "watermarked": done.watermarked,
                    "cues": to_json(chosen),
                },
                indent=None if json_lines else 2,
            )
        )


def partial_path(output: str) -> str:
    """Where a failed or interrupted ``--stream -o output`` keeps the audio generated so far."""
    return f"{output}.partial"


@contextmanager
def _stream_target(output: str | None) -> Iterator[str | None]:
    """A streamed file output: written under a temporary name, so ``output`` keeps its old
    contents until the stream ends; a stream that fails or is interrupted leaves what it wrote
    (its header completed when the writer closed) at `partial_path`, and says so."""
    if output is None or output == "-":
        yield output
        return
    partial, started = partial_path(output), time.time()
    try:
        with atomic_path(output, keep_suffix=True, partial=partial) as tmp:
            yield str(tmp)
    except BaseException:
        try:
            kept = os.path.getmtime(partial) >= started - 1
        except OSError:
            kept = False
        if kept:
            click.echo(f"note: the audio streamed before the stop is in {partial}; {output} is unchanged", err=True)
        raise


def _bar(ev: Any, show: bool) -> Any:
    from tqdm import tqdm

    s = ev.sentence
    return tqdm(total=ev.budget, unit="frame", disable=not show, desc=f"sentence {s.index + 1}", leave=False)


def _notes(ev: Any, kw: dict[str, Any]) -> list[str]:
    s, out = ev.sentence, []
    if ev.dropped:
        out.append(
            f"sentence {s.index + 1}: dropped context turn(s) {', '.join(str(i + 1) for i in ev.dropped)} "
            f"({kw['context_strategy']}) to fit the model's context"
        )
    if not ev.ended and not ev.capped:
        tries = f" after {ev.attempts} tries" if ev.attempts > 1 else ""
        out.append(f"sentence {s.index + 1} reached its {len(ev.frames)}-frame budget without ending{tries}")
    elif ev.attempts > 1:
        out.append(f"sentence {s.index + 1} ran past its budget; try {ev.attempts} (seed {ev.seed}) ended it")
    return out


def _write_audio(path: str, wave: Any, rate: int, kw: dict[str, Any]) -> None:
    from ..audio import AudioWriter

    with atomic_path(path, keep_suffix=True) as tmp:
        with AudioWriter(str(tmp), rate, pcm16=kw["pcm16"], out_rate=kw["sample_rate"]) as w:
            w.write(wave, last=True)


def _write_cues(cues: list[Any], kw: dict[str, Any]) -> None:
    from ..timestamps import to_srt, to_vtt, write_text_atomic

    if kw["srt"]:
        write_text_atomic(kw["srt"], to_srt(cues))
    if kw["vtt"]:
        write_text_atomic(kw["vtt"], to_vtt(cues))


def _split(done: Any, folder: str, rate: int, kw: dict[str, Any]) -> None:
    """One file per turn (``turn-001.wav``, ...), cut from the whole output at the cue times."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    suffix = Path(kw["output"]).suffix if kw["output"] and kw["output"] != "-" else ".wav"
    for cue in done.turns:
        a, b = round(cue.start * rate), round(cue.end * rate)
        _write_audio(str(d / f"turn-{cue.index:03d}{suffix}"), done.audio[a:b], rate, kw)
