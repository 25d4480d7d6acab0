"""``ccsm voice``: saved voices (context turns kept with their Mimi codes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from ..limits import regular_file
from .common import MAX_SPEAKER, ModelChoice, input_path, model_options, print_table

if TYPE_CHECKING:
    from ..voices import Voice


def _store() -> Any:
    from ..voices import VoiceStore

    return VoiceStore()


def _turns(n: int) -> str:
    return f"{n} turn{'' if n == 1 else 's'}"


def _record(voice: Voice, path: Path | None = None) -> dict[str, Any]:
    from ..voices import FRAME_RATE

    out: dict[str, Any] = {
        "name": voice.name,
        "speaker": voice.speaker,
        "turns": [
            {"text": t.text, "frames": t.frames(), "seconds": round(t.frames() / FRAME_RATE, 2)} for t in voice.turns
        ],
        "frames": voice.frames(),
        "seconds": round(voice.seconds(), 2),
        "num_codebooks": voice.num_codebooks,
        "codec": voice.codec,
        "model": voice.model,
        "created": voice.created,
    }
    if path is not None:
        out["path"] = str(path)
    return out


@click.group()
def voice() -> None:
    """Saved voices: context turns (speaker, text, audio) stored with their Mimi codes.

    A voice is encoded once, when it is added, and kept in $CCSM_DATA_DIR/voices (else the user
    data folder, e.g. ~/.local/share/ccsm/voices).
    """


@voice.command("add")
@click.argument("name", required=False)
@click.option("--speaker", "-s", type=click.IntRange(0, MAX_SPEAKER), default=None, help="Speaker id of the turns.")
@click.option("--text", "texts", multiple=True, help="Transcript of a turn (repeat, paired in order with --audio).")
@click.option(
    "--audio",
    "audios",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Audio of a turn (.wav/.flac/.ogg, or a .npy of Mimi codes); repeat with --text.",
)
@click.option(
    "--from-hub", is_flag=True, help="Add the prompts of sesame/csm-1b found in the local Hugging Face cache."
)
@click.option("--force", "-f", is_flag=True, help="Replace a voice of the same name.")
@model_options
def add(
    name: str | None,
    speaker: int | None,
    texts: tuple[str, ...],
    audios: tuple[str, ...],
    from_hub: bool,
    force: bool,
    models: ModelChoice,
) -> None:
    """Add voice NAME from turns of --text and --audio, encoded with the model's Mimi codec.

    \b
    Examples:
      ccsm voice add ann --speaker 0 --text "Hi, I'm Ann." --audio ann.wav --model ~/csm-1b
      ccsm voice add --from-hub --model sesame/csm-1b
    """
    from ..audio import read_audio
    from ..voices import FRAME_RATE, MAX_FRAMES, check_name, hub_prompts, make_voice

    store = _store()
    jobs: list[tuple[str, int, list[tuple[str, str]]]] = []  # name, speaker, [(text, audio file)]
    skipped: list[tuple[Path, str]] = []
    if from_hub:
        if speaker is not None or texts or audios:
            raise UsageError("--from-hub takes no --speaker, --text or --audio", "give one or the other")
        found, skipped = hub_prompts()
        if name is not None:
            found, skipped = [f for f in found if f[0] == check_name(name)], []
            if not found:
                raise UsageError(
                    f"no prompt named {name} in the cached sesame/csm-1b",
                    "run `ccsm voice add --from-hub` without a name to add every prompt",
                )
        jobs = [(n, s, [(t, str(wav))]) for n, s, t, wav in found]
    else:
        if name is None:
            raise UsageError("give the NAME of the voice", "ccsm voice add NAME --speaker S --text T --audio FILE")
        check_name(name)
        if speaker is None:
            raise UsageError("give the --speaker id of the voice", "e.g. --speaker 0")
        if not texts or len(texts) != len(audios):
            raise UsageError(
                f"got {len(texts)} --text and {len(audios)} --audio: each turn needs one of each",
                "repeat --text T --audio FILE once per turn, in order",
            )
        for a in audios:
            input_path(a, "codes file" if a.endswith(".npy") else "audio file")
        jobs = [(name, speaker, list(zip(texts, audios)))]
    if not force:
        taken = [n for n, _, _ in jobs if store.path(n).exists()]
        if taken:
            raise UsageError(
                f"voice {taken[0]} exists" if len(taken) == 1 else f"voices {', '.join(taken)} exist",
                "pass --force to replace it, or choose another name",
            )
    for wav, why in skipped:
        click.echo(f"skipped {wav.name}: {why}", err=True)

    from .codec import read_codes

    sp = models.speech()
    codec = sp.need_mimi()
    for vname, vspeaker, turns in jobs:
        made = [
            (
                text,
                read_codes(audio, codec.num_codebooks)
                if audio.endswith(".npy")
                else read_audio(audio, sp.sample_rate, max_seconds=MAX_FRAMES / FRAME_RATE),
            )
            for text, audio in turns
        ]
        v = make_voice(sp, vname, vspeaker, made)
        path = store.add(v, replace=force)
        click.echo(f"voice {v.name}: {_turns(len(v.turns))}, {v.seconds():.1f} s, saved to {path}")


@voice.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records.")
def list_(as_json: bool) -> None:
    """List the saved voices (an unreadable file is listed with its error)."""
    from ..voices import Voice

    store = _store()
    entries = store.scan()
    if as_json:
        out = [
            _record(item, store.path(name))
            if isinstance(item, Voice)
            else {"name": name, "path": str(store.path(name)), "error": item.one_line()}
            for name, item in entries
        ]
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if not entries:
        click.echo(f"no voices saved in {store.root} (add one with `ccsm voice add`)", err=True)
        return
    rows: list[tuple[str, ...]] = [("NAME", "SPEAKER", "TURNS", "SECONDS", "MODEL", "CREATED")]
    for name, item in entries:
        if isinstance(item, Voice):
            rows.append(
                (name, str(item.speaker), str(len(item.turns)), f"{item.seconds():.1f}", item.model, item.created)
            )
        else:
            rows.append((name, "-", "-", "-", "-", f"unreadable: {item.one_line()}"))
    print_table(rows)


@voice.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="A machine-readable record.")
def show(name: str, as_json: bool) -> None:
    """Show voice NAME: its turns, their length, and the codec fingerprint."""
    from ..voices import FRAME_RATE

    store = _store()
    v = store.get(name)
    if as_json:
        click.echo(json.dumps(_record(v, store.path(name)), indent=2, ensure_ascii=False))
        return
    click.echo(f"voice {v.name}: speaker {v.speaker}, {_turns(len(v.turns))}, {v.seconds():.1f} s")
    click.echo(f"model:   {v.model}")
    click.echo(f"codec:   {v.codec} ({v.num_codebooks} codebooks)")
    click.echo(f"created: {v.created}")
    click.echo(f"file:    {store.path(name)}")
    for i, t in enumerate(v.turns, 1):
        click.echo(f"  {i}. {t.frames() / FRAME_RATE:5.1f} s  {t.text}")


@voice.command()
@click.argument("name")
def remove(name: str) -> None:
    """Remove voice NAME."""
    store = _store()
    path = store.path(name)
    store.remove(name)
    click.echo(f"removed voice {name} ({path})")


@voice.command("export")
@click.argument("name")
@click.option(
    "--output",
    "-o",
    type=click.Path(),
    default=None,
    help="File (or folder) to write [default: NAME.ccsmvoice here].",
)
def export(name: str, output: str | None) -> None:
    """Copy voice NAME to a .ccsmvoice file (checked first), to share it."""
    from ..files import check_output
    from ..voices import SUFFIX

    if output and not Path(output).is_dir():
        check_output(output)
    dest = _store().export(name, Path(output) if output else Path(f"{name}{SUFFIX}"))
    click.echo(f"voice {name} exported to {dest}")


@voice.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Save it under this name instead of the one in the file.")
@click.option("--force", "-f", is_flag=True, help="Replace a voice of the same name.")
def import_(file: str, name: str | None, force: bool) -> None:
    """Add the voice in FILE (a .ccsmvoice file, checked first)."""
    store = _store()
    v = store.import_(regular_file(file, "voice file"), name=name, replace=force)
    click.echo(f"voice {v.name}: {_turns(len(v.turns))}, {v.seconds():.1f} s, saved to {store.path(v.name)}")
