"""``ccsm run``: text (plus conversation context) to speech."""

from __future__ import annotations

from typing import Any

import click

from ..builtin.samplers import SPEECH_DEFAULTS
from .common import backend_options, model_options, progress_bar, sampling_from, sampling_options


@click.command()
@click.argument("text")
@model_options
@click.option(
    "--speaker", "-s", type=click.IntRange(min=0), default=0, show_default=True, help="Speaker id of the new turn."
)
@click.option(
    "--context",
    "-c",
    "contexts",
    type=(click.IntRange(min=0), str, click.Path()),
    multiple=True,
    metavar="SPEAKER TEXT AUDIO",
    help="An earlier turn: speaker, its text, its audio file (or .npy codes). Repeatable, oldest first.",
)
@click.option(
    "--context-strategy",
    type=click.Choice(["recency", "importance", "hybrid"]),
    default="recency",
    show_default=True,
    help="Which turns to drop when the context does not fit.",
)
@click.option(
    "--output",
    "-o",
    type=str,
    default=None,
    help="Audio file (.wav/.flac/.ogg) or '-' for raw float32 on stdout. [default: output.wav]",
)
@click.option("--stream", is_flag=True, help="Write audio progressively, frame by frame, while generating.")
@click.option("--pcm16", is_flag=True, help="16-bit PCM WAV instead of 32-bit float.")
@click.option(
    "--sample-rate",
    type=click.IntRange(min=8000, max=192000),
    default=None,
    help="Resample the output (default 24000).",
)
@click.option(
    "--codes-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also save the frames as an int .npy array (frames x 32).",
)
@click.option(
    "--max-audio-ms",
    type=click.FloatRange(min=80),
    default=90_000,
    show_default=True,
    help="Longest audio to generate.",
)
@sampling_options(
    SPEECH_DEFAULTS,
    topk_flags=("--topk", "--top-k"),
    sampler=True,
    helps={
        "topk": "Keep the k most likely codes.",
        "top_p": "Nucleus sampling mass (0, 1].",
        "min_p": "Drop codes below p x the top probability.",
        "logit_bias": "Add BIAS to code ID (repeatable; -inf bans).",
        "sampler": "Final sampler by name (default: categorical, or greedy at temperature 0).",
        "seed": "Random seed for reproducible output.",
    },
    extra=[
        click.option(
            "--min-frames",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="No end of audio before this many frames.",
        ),
        click.option(
            "--guard-special-codes", is_flag=True, help="Never sample audio ids 2048-2050 (the original may)."
        ),
    ],
)
@click.option(
    "--watermark/--no-watermark", default=True, show_default=True, help="Mark the audio (needs a watermark plugin)."
)
@click.option(
    "--watermark-key",
    type=click.Path(dir_okay=False),
    default=None,
    help="Key file for the watermark (default: the plugin's public key, which proves nothing).",
)
@click.option("--watermark-method", default=None, help="Watermark method by name (default: the plugin's default).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def run(
    text: str,
    model: str | None,
    tokenizer: str | None,
    mimi: str | None,
    backend: str | None,
    threads: int | None,
    backend_option: tuple[str, ...],
    dtype: str | None,
    quantize: str | None,
    speaker: int,
    contexts: tuple,
    context_strategy: str,
    output: str | None,
    stream: bool,
    pcm16: bool,
    sample_rate: int | None,
    codes_out: str | None,
    max_audio_ms: float,
    min_frames: int,
    guard_special_codes: bool,
    watermark: bool,
    watermark_key: str | None,
    watermark_method: str | None,
    progress: bool | None,
    **sampling: Any,
) -> None:
    """Speak TEXT with CSM and write 24 kHz audio.

    \b
    Examples:
      ccsm run "Hello there." --model ~/csm-1b -o hello.wav
      ccsm run "And you?" -s 1 --context 0 "Hi, how are you?" hi.wav -o reply.wav
      ccsm run "A long story..." --stream -o - | aplay -r 24000 -f FLOAT_LE
      ccsm run "Hi" --model demo -o demo.wav      # random weights: noise, not speech
    """
    import numpy as np

    from ..audio import AudioWriter
    from ..generator import GenerationSettings, check_turn, make_sampler
    from ..speech import load_speech
    from ..watermark import pick_watermarker

    check_turn(speaker, text)
    if output is None and codes_out is None:
        output = "output.wav"
    if output == "-" and not stream:
        stream = True  # raw audio on stdout is the streaming format
    settings = GenerationSettings(
        max_audio_ms=max_audio_ms,
        min_frames=min_frames,
        guard_special=guard_special_codes,
        context_strategy=context_strategy,
        sampling=sampling_from(sampling),
    )
    make_sampler(settings)  # validate sampling options before the (slow) model load
    marker = pick_watermarker(watermark_key, watermark_method) if watermark and output is not None else None
    sp = load_speech(
        model,
        backend,
        tokenizer=tokenizer,
        mimi=mimi,
        **backend_options(threads, backend_option, dtype, int(quantize) if quantize else None),
    )
    if sp.demo:
        click.echo(f"note: {_demo_notice()}", err=True)
    context = [_segment(sp, *c) for c in contexts]
    if output is not None:
        sp.need_mimi()
    frames: list[Any] = []
    total = settings.max_frames
    if output is not None and stream:
        if marker is not None:
            click.echo("note: --stream output is not watermarked (a mark needs the whole utterance)", err=True)
        with AudioWriter(output, sp.sample_rate, pcm16=pcm16, out_rate=sample_rate) as writer:
            for frame, audio in progress_bar(sp.stream(text, speaker, context, settings), total, progress, "speaking"):
                frames.append(frame)
                writer.write(audio)
    else:
        frames = list(progress_bar(sp.frames(text, speaker, context, settings), total, progress, "generating"))
        if output is not None:
            wave = sp.mimi.decode(np.stack(frames).T) if frames else np.zeros(0, np.float32)
            if marker is not None and wave.size:
                wave = marker.embed(wave, sp.sample_rate)
            with AudioWriter(output, sp.sample_rate, pcm16=pcm16, out_rate=sample_rate) as writer:
                writer.write(wave, last=True)
    if sp.generator.dropped:
        click.echo(
            f"note: dropped context turn(s) {', '.join(str(i + 1) for i in sp.generator.dropped)} "
            f"({context_strategy}) to fit the model's context",
            err=True,
        )
    if codes_out:
        np.save(codes_out, np.stack(frames) if frames else np.zeros((0, 32), np.int64))
    where = " and ".join(x for x in (output if output != "-" else None, codes_out) if x)
    click.echo(
        f"{len(frames)} frames ({len(frames) * 0.08:.2f} s of audio)" + (f" -> {where}" if where else ""), err=True
    )


def _segment(sp: Any, speaker: int, text: str, audio: str):
    """A context turn from an audio file (resampled to 24 kHz, Mimi-encoded) or a .npy of codes."""
    from ..audio import read_audio
    from ..commands.codec import read_codes
    from ..generator import Segment

    if audio.endswith(".npy"):
        return Segment(speaker, text, codes=read_codes(audio))
    return Segment(speaker, text, audio=read_audio(audio, sp.sample_rate))


def _demo_notice() -> str:
    from ..loading.demo import NOTICE

    return NOTICE
