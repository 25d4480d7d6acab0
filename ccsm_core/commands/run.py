"""``ccsm run``: text of any length (plus a voice and conversation context) to speech."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import UsageError
from ..limits import regular_file
from .common import MAX_SPEAKER, ModelChoice, input_path, model_options
from .speaking import deliver, prepare, speaking_options

MAX_TEXT_BYTES = 4 * 2**20  # longer input is refused (about 60 hours of speech)


@click.command()
@click.argument("text", required=False)
@click.option(
    "--text-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the text from this UTF-8 file ('-' for stdin).",
)
@click.option(
    "--batch-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Speak each line of this UTF-8 file ('-' for stdin) as its own utterance, several at once; "
    "outputs are named by -o with {n} for the line's number. Blank lines and '#' lines are skipped.",
)
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    help="With --batch-file: utterances generated together.",
)
@model_options
@click.option("--voice", "-v", default=None, help="A saved voice (see `ccsm voice list`) or a .ccsmvoice file.")
@click.option(
    "--speaker",
    "-s",
    type=click.IntRange(0, MAX_SPEAKER),
    default=None,
    help="Speaker id of the new text. [default: the voice's, else 0]",
)
@click.option(
    "--context",
    "-c",
    "contexts",
    type=(click.IntRange(0, MAX_SPEAKER), str, click.Path(dir_okay=False)),
    multiple=True,
    metavar="SPEAKER TEXT AUDIO",
    help="An earlier turn: speaker, its text, its audio file (or .npy codes). Repeatable, oldest first.",
)
@speaking_options
def run(
    text: str | None,
    text_file: str | None,
    batch_file: str | None,
    batch_size: int,
    models: ModelChoice,
    voice: str | None,
    speaker: int | None,
    contexts: tuple,
    **kw: Any,
) -> None:
    """Speak TEXT with CSM and write 24 kHz audio.

    TEXT may be long: it is spoken sentence by sentence, each with the voice and the sentences
    before it as context, joined by one continuous Mimi stream. Give '-' (or --text-file) to
    read the text from stdin (or a file).

    \b
    Examples:
      ccsm run "Hello there." --model ~/csm-1b -o hello.wav
      ccsm run "Hello again." --voice ann -o again.wav
      ccsm run "And you?" -s 1 --context 0 "Hi, how are you?" hi.wav -o reply.wav
      ccsm run --text-file chapter.txt --voice ann -o chapter.wav --srt chapter.srt
      cat notes.txt | ccsm run - --voice ann --stream -o - | aplay -r 24000 -f FLOAT_LE
      ccsm run --batch-file lines.txt --voice ann -o 'line-{n}.wav' --batch 8
      ccsm run "Hi" --model demo -o demo.wav      # random weights: noise, not speech
    """
    if batch_file is not None:
        if text is not None or text_file is not None:
            raise UsageError("--batch-file and TEXT (or --text-file) both given", "give one of them")

        _run_batch(batch_file, batch_size, models, voice, speaker, contexts, kw)
        return
    words = read_text(text, text_file)
    plan = prepare(kw)
    saved = load_voice(voice) if voice else None
    check_contexts(contexts)
    sp = models.speech()
    context = [_segment(sp, *c) for c in contexts]
    from ..pipeline import Line, speak

    line = Line(words, speaker, saved)
    deliver(
        sp,
        speak(
            sp,
            [line],
            context=context,
            settings=plan.settings,
            options=plan.options,
            marker=plan.marker,
            audio=kw["output"] is not None,
        ),
        kw,
    )


def read_text(text: str | None, text_file: str | None) -> str:
    """TEXT, or the file's (or stdin's, for '-') UTF-8 contents."""
    if text is not None and text_file is not None:
        raise UsageError("both TEXT and --text-file given", "give one of them")
    source = text_file if text_file is not None else ("-" if text == "-" else None)
    if source is None:
        if text is None:
            raise UsageError("no text to speak", "give TEXT, --text-file FILE, or '-' to read stdin")
        return text
    if source == "-":
        data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        name = "stdin"
    else:
        from ..limits import regular_file

        p = regular_file(source, "text file")
        with p.open("rb") as fh:
            data = fh.read(MAX_TEXT_BYTES + 1)
        name = str(p)
    if len(data) > MAX_TEXT_BYTES:
        raise UsageError(f"{name} holds more than {MAX_TEXT_BYTES >> 20} MiB of text", "split it into parts")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{name} is not UTF-8 text (byte {e.start})", "save it as UTF-8") from None


def load_voice(spec: str) -> Any:
    """A voice by name from the store, or from a ``.ccsmvoice`` file path."""
    from ..voices import SUFFIX, VoiceStore, read_voice

    if spec.endswith(SUFFIX) or "/" in spec:
        return read_voice(regular_file(spec, "voice file"))  # its reader names what is wrong inside
    return VoiceStore().get(spec)


def check_contexts(contexts: tuple) -> None:
    """Each ``--context`` turn's speaker, text and file, before any model loads."""
    from ..generator import check_turn

    for speaker, text, audio in contexts:
        check_turn(speaker, text)
        input_path(audio, "context codes file" if audio.endswith(".npy") else "context audio")


def _segment(sp: Any, speaker: int, text: str, audio: str):
    """A context turn from an audio file (resampled to 24 kHz, Mimi-encoded) or a .npy of codes."""
    from ..audio import read_audio
    from ..commands.codec import read_codes
    from ..context import audio_seconds_fitting
    from ..generator import Segment, check_turn

    check_turn(speaker, text)
    if audio.endswith(".npy"):
        return Segment(speaker, text, codes=read_codes(audio))
    rows = sp.generator.model.cfg.backbone.max_seq_len
    return Segment(speaker, text, audio=read_audio(audio, sp.sample_rate, max_seconds=audio_seconds_fitting(rows)))


# the outputs --batch-file names per line: option key -> (flag, example suffix)
BATCH_OUTPUTS = {
    "output": ("-o", ".wav"),
    "codes_out": ("--codes-out", ".npy"),
    "srt": ("--srt", ".srt"),
    "vtt": ("--vtt", ".vtt"),
}


def _run_batch(
    batch_file: str,
    slots: int,
    models: ModelChoice,
    voice: str | None,
    speaker: int | None,
    contexts: tuple,
    kw: dict[str, Any],
) -> None:
    """``--batch-file``: each line spoken as `ccsm run LINE` would, ``slots`` at a time together."""
    lines = [ln.strip() for ln in read_text(None, batch_file).splitlines()]
    texts = [(n, ln) for n, ln in enumerate(lines, 1) if ln and not ln.startswith("#")]
    if not texts:
        raise UsageError(f"{batch_file} has no lines to speak", "write one utterance per line")
    if kw["stream"] or kw["output"] == "-":
        raise UsageError("--batch-file writes one file per line", "drop --stream and -o -")
    if kw["output"] is None and kw["codes_out"] is None:
        kw["output"] = "utterance-{n}.wav"
    width = len(str(len(lines)))
    for name, (flag, suffix) in BATCH_OUTPUTS.items():
        if kw[name] is not None and "{n}" not in kw[name]:
            raise UsageError(
                f"--batch-file needs {{n}} in {flag} (one file per line), got {kw[name]!r}",
                f"e.g. {flag} 'line-{{n}}{suffix}'",
            )
    plan = prepare(kw)
    saved = load_voice(voice) if voice else None
    check_contexts(contexts)
    sp = models.speech()
    context = [_segment(sp, *c) for c in contexts]
    from tqdm import tqdm

    from ..pipeline import Finished, Line
    from ..speak_many import Failed, speak_many

    show = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
    jobs = [[Line(t, speaker, saved)] for _, t in texts]
    events: dict[int, list[Any]] = {i: [] for i in range(len(jobs))}
    failed = 0
    with tqdm(total=len(jobs), unit="line", disable=not show, desc="lines") as bar:
        runs = speak_many(
            sp,
            jobs,
            slots=slots,
            context=context,
            settings=plan.settings,
            options=plan.options,
            marker=plan.marker,
            audio=kw["output"] is not None,
        )
        for i, ev in runs:
            n = texts[i][0]
            if isinstance(ev, Failed):
                failed += 1
                click.echo(f"error: line {n}: {ev.error.one_line()}", err=True)
                bar.update(1)
                continue
            events[i].append(ev)
            if isinstance(ev, Finished):
                one = {**kw, "progress": False}
                for name in BATCH_OUTPUTS:
                    if kw[name] is not None:
                        one[name] = kw[name].replace("{n}", str(n).zfill(width))
                deliver(sp, iter(events.pop(i)), one, json_lines=True)
                bar.update(1)
    if failed:
        raise UsageError(f"{failed} of {len(jobs)} lines failed (see above)", "fix those lines and run them again")
