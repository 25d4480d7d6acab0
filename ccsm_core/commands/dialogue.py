"""``ccsm dialogue``: a script of turns (``[voice-or-speaker] text``) spoken as one conversation."""

from __future__ import annotations

import os
from typing import Any

import click

from ..errors import UsageError
from ..limits import regular_file
from .common import ModelChoice, model_options
from .run import load_voice
from .speaking import deliver, prepare, speaking_options


@click.command()
@click.argument("script")
@model_options
@click.option(
    "--split-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write one audio file per turn (turn-001.wav, ...) into this folder.",
)
@speaking_options
def dialogue(
    script: str,
    models: ModelChoice,
    split_dir: str | None,
    **kw: Any,
) -> None:
    """Speak a dialogue SCRIPT ('-' for stdin): one turn per line, ``[ann] Hi!`` in the saved
    voice ann, or ``[1] Hello.`` as speaker 1. Each turn hears the turns before it (their text
    and generated audio) as context. Blank lines and lines starting with # are skipped; a line
    without a tag continues the turn above.

    \b
    Examples:
      ccsm dialogue talk.txt -o talk.wav --srt talk.srt
      ccsm dialogue talk.txt -o talk.wav --split-dir turns/
    """
    from ..pipeline import speak
    from ..script import read_script

    if script != "-":
        regular_file(script, "script file")
    turns = read_script(script)
    plan = prepare(kw)
    if split_dir and kw["output"] in (None, "-"):
        raise UsageError("--split-dir cuts the audio file", "write the audio to a file with -o")
    if split_dir and os.path.lexists(split_dir) and not os.path.isdir(split_dir):
        raise UsageError(f"--split-dir {split_dir} is not a folder", "give a folder (made if missing)")
    lines = assign_speakers(turns)
    sp = models.speech()
    deliver(
        sp,
        speak(
            sp,
            lines,
            settings=plan.settings,
            options=plan.options,
            marker=plan.marker,
            audio=kw["output"] is not None,
        ),
        kw,
        cues="turns",
        split_dir=split_dir,
    )


def assign_speakers(turns: list[Any]) -> list[Any]:
    """`Line`s of the script's turns. Numeric tags speak as that id; each voice keeps its saved
    speaker id unless a number tag or an earlier voice has it, then takes the lowest free id."""
    from ..pipeline import Line

    voices: dict[str, Any] = {}
    for t in turns:
        if t.voice is not None and t.voice not in voices:
            voices[t.voice] = load_voice(t.voice)
    taken = {t.speaker for t in turns if t.speaker is not None}
    ids: dict[str, int] = {}
    for name, v in voices.items():
        sid = v.speaker
        if sid in taken:
            sid = next(i for i in range(len(taken) + 1) if i not in taken)
            click.echo(f"note: voice {name} speaks as speaker {sid} (its id {v.speaker} is taken)", err=True)
        taken.add(sid)
        ids[name] = sid
    return [
        Line(t.text, ids[t.voice], voices[t.voice]) if t.voice is not None else Line(t.text, t.speaker, None)
        for t in turns
    ]
