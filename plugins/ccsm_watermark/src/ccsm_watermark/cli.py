"""``ccsm watermark embed|detect|keygen``. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ccsm_core.commands.common import Real
from ccsm_core.errors import CcsmError, FormatError, UsageError

from . import DEFAULT_METHOD, METHODS, PAYLOAD_BITS, PUBLIC_DEFAULT_KEY

MIN_MARK_SCORE = 11.0  # embed warns below this score on the marked audio (p < 1e-6 needs about 9)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aac", ".aiff", ".aif")


def parse_payload(text: str) -> int:
    """``0xC0FFEE42`` or ``12345`` as a 32-bit payload; a `UsageError` otherwise."""
    try:
        value = int(str(text).replace("_", ""), 0)
    except ValueError:
        raise UsageError(f"payload {text!r} is not an integer", "give e.g. 0xC0FFEE42 or 12345") from None
    if not 0 <= value < 1 << PAYLOAD_BITS:
        raise UsageError(f"payload {text} does not fit in {PAYLOAD_BITS} bits", "use a value from 0 to 0xFFFFFFFF")
    return value


def _key(key_file: str | None) -> bytes:
    from . import keys

    if key_file is None:
        click.echo("warning: no --key-file, using the public default key: the mark proves nothing", err=True)
        return PUBLIC_DEFAULT_KEY
    return keys.load(key_file)


def read_audio(path: str) -> tuple[Any, int, Any]:
    """(float32 samples (n,) or (n, ch), rate, soundfile info or None); ffmpeg as a fallback."""
    import numpy as np
    import soundfile as sf

    from ccsm_core.limits import regular_file

    if not os.path.exists(path):
        raise FormatError(f"audio file {path!r} not found", "check the path")
    regular_file(path, "audio file")
    try:
        info = sf.info(path)
        data, rate = sf.read(path, dtype="float32", always_2d=False)
        return data, int(rate), info
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        err = e
    import shutil
    import subprocess

    if shutil.which("ffmpeg"):
        proc = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", path, "-f", "f32le", "-c:a", "pcm_f32le", "-"], capture_output=True
        )
        probe = (
            subprocess.run(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-select_streams",
                    "a:0",
                    "-show_entries",
                    "stream=sample_rate,channels",
                    "-of",
                    "csv=p=0",
                    path,
                ],
                capture_output=True,
                text=True,
            )
            if shutil.which("ffprobe")
            else None
        )
        if proc.returncode == 0 and probe is not None and probe.returncode == 0 and probe.stdout.strip():
            rate_s, ch_s = probe.stdout.strip().splitlines()[0].split(",")[:2]
            data = np.frombuffer(proc.stdout, dtype=np.float32).reshape(-1, int(ch_s))
            return (data[:, 0] if int(ch_s) == 1 else data), int(rate_s), None
    raise FormatError(
        f"cannot read audio file {path!r}: {' '.join(str(err).split())}",
        "use WAV, FLAC, OGG or MP3 (or install ffmpeg for other formats)",
    )


def _watermarker(method: str, key: bytes, **params: Any) -> Any:
    from . import create

    try:
        return create(method, key, **params)
    except ValueError as e:
        raise UsageError(str(e), "give --strength in (0, 6] dB and a non-empty --key-file") from None


@click.group("watermark")
def watermark() -> None:
    """Embed, detect and key keyed audio watermarks (plugin ccsm-watermark)."""


@watermark.command("embed")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="marked audio file")
@click.option("--key-file", default=None, help="private key (ccsm watermark keygen); default: the public key")
@click.option("--payload", default="0", show_default=True, help="32-bit payload, e.g. 0xC0FFEE42")
@click.option("--method", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD, show_default=True)
@click.option(
    "--strength", type=Real(0, 6, min_open=True), default=None, help="modulation depth in dB (default: the method's)"
)
def embed_cmd(
    input_path: str, output: str, key_file: str | None, payload: str, method: str, strength: float | None
) -> None:
    """Write OUT: IN carrying a keyed mark with PAYLOAD."""
    import numpy as np
    import soundfile as sf

    value = parse_payload(payload)
    key = _key(key_file)
    audio, rate, info = read_audio(input_path)
    wm = _watermarker(method, key, **({} if strength is None else {"strength_db": strength}))
    try:
        marked = wm.embed(audio, rate, value)
    except ValueError as e:
        raise UsageError(f"{input_path}: {e}", "give audio of 8 kHz or more without NaN or infinite samples") from None
    subtype = None
    if info is not None:
        fmt = os.path.splitext(output)[1].lstrip(".").upper() or "WAV"
        if fmt in sf.available_formats() and sf.check_format(fmt, info.subtype):
            subtype = info.subtype
    if subtype is None or not subtype.startswith(("FLOAT", "DOUBLE")):
        marked = np.clip(marked, -1.0, 1.0)
    from ccsm_core.files import atomic_path

    try:
        with atomic_path(output, keep_suffix=True) as tmp:
            sf.write(str(tmp), marked, rate, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise FormatError(
            f"cannot write {output!r}: {' '.join(str(e).split())}", "use a .wav or .flac output name"
        ) from None
    click.echo(f"marked {input_path} -> {output} ({method}, payload 0x{value:08X})", err=True)
    score = wm.mark_score(marked, rate, value)
    if score < MIN_MARK_SCORE:  # reported now, not found missing later
        click.echo(
            f"warning: {input_path}: the mark is weak here (score {score:.1f}, detection needs about "
            f"{MIN_MARK_SCORE:g}): too short, too quiet or too sparse to hide it; use longer audio or --strength",
            err=True,
        )


@watermark.command("detect")
@click.argument("paths", metavar="FILE_OR_DIR...", nargs=-1, required=True)
@click.option("--key-file", default=None, help="private key; default: the public key")
@click.option(
    "--method",
    type=click.Choice(["auto", *METHODS]),
    default="auto",
    show_default=True,
    help="auto tries every method (the p-value accounts for it)",
)
@click.option(
    "--threshold",
    type=Real(0, 1, min_open=True, max_open=True),
    default=1e-6,
    show_default=True,
    help="report present when the false-positive p-value is below this",
)
@click.option(
    "--payload-threshold",
    type=Real(0, 1, min_open=True, max_open=True),
    default=1e-4,
    show_default=True,
    help="report the payload when the chance that a wrong one passes its check is below this",
)
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="files checked at once (processes)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per file (one per line)")
def detect_cmd(
    paths: tuple[str, ...],
    key_file: str | None,
    method: str,
    threshold: float,
    payload_threshold: float,
    jobs: int,
    as_json: bool,
) -> None:
    """Say whether each FILE (or each audio file under DIR) carries a mark for the key, its
    payload and p-values. Long files are read in blocks of WINDOW_S seconds. A file that cannot
    be read is reported (one line; in --json an entry with "error") and the others are still
    checked; the exit status is then 2."""
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold {threshold} is not in (0, 1)", "give e.g. 1e-6")
    if not 0 < payload_threshold < 1:
        raise UsageError(f"--payload-threshold {payload_threshold} is not in (0, 1)", "give e.g. 1e-4")
    if jobs < 1:
        raise UsageError(f"--jobs {jobs} is below 1", "give the number of files to check at once, e.g. 2")
    files = _collect(paths)
    key = _key(key_file)
    names = list(METHODS) if method == "auto" else [method]
    for name in names:  # bad settings fail here, once, not in every worker
        _watermarker(name, key, threshold=threshold, payload_threshold=payload_threshold)
    args = [(f, key, names, threshold, payload_threshold) for f in files]
    if jobs == 1 or len(files) == 1:
        results: Any = map(_detect_one, args)
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=min(jobs, len(files)))
        results = pool.map(_detect_one, args)
    failed = 0
    for out in results:
        if "error" in out and len(files) == 1:
            raise _ERRORS.get(out["error_type"], FormatError)(out["error"], out["hint"])
        failed += "error" in out
        _print(out, as_json)
    if failed:
        raise FormatError(
            f"{failed} of {len(files)} files could not be read", "see the error lines above; the others were checked"
        )


def _collect(paths: tuple[str, ...]) -> list[str]:
    """The files named, and the audio files under the folders named (sorted)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.lower().endswith(AUDIO_SUFFIXES)
            )
            if not found:
                raise UsageError(
                    f"no audio files under {p!r}", f"give files or a folder with {', '.join(AUDIO_SUFFIXES)}"
                )
            files += found
        else:  # a missing or unreadable file is reported in its turn, like any unreadable one
            files.append(p)
    return files


def _print(out: dict[str, Any], as_json: bool) -> None:
    if "error" in out:  # a file that could not be read: said, and the others still checked
        if as_json:
            click.echo(json.dumps(out))
        else:
            click.echo(f"error: {CcsmError(out['error'], out['hint']).one_line()}", err=True)
        return
    if as_json:
        click.echo(json.dumps(out))
        return
    present = out["present"]
    word = {True: "present", False: "absent", None: "cannot tell"}[present]
    click.echo(
        f"{out['file']}: watermark {word} (method {out['method']}, p-value {out['p_value']:.3g}, "
        f"score {out['score']:.1f})"
    )
    if present:
        if out["payload"]:
            click.echo(f"payload: {out['payload']} (check p-value {out['payload_p_value']:.2g})")
        else:
            click.echo(f"payload: unreadable (mark found, payload check p-value {out['payload_p_value']:.2g})")
    elif present is None:
        click.echo(f"reason: {out['reason']}")


_ERRORS: dict[str, type[CcsmError]] = {"UsageError": UsageError, "FormatError": FormatError}


def _detect_one(args: tuple[str, bytes, list[str], float, float]) -> dict[str, Any]:
    """Detect in one file (in a worker process with --jobs): the JSON answer, or an error."""
    from .longfile import detect_file

    path, key, names, threshold, payload_threshold = args
    try:
        return detect_file(path, key, names, threshold, payload_threshold)
    except CcsmError as e:
        cause, hint, kind = " ".join(str(e).split()), e.hint, type(e).__name__
    except (ValueError, RuntimeError, OSError) as e:  # e.g. a file truncated after its header
        cause, hint, kind = (
            f"cannot read audio file {path!r}: {' '.join(str(e).split())}",
            "check the file",
            "FormatError",
        )
    return {"file": path, "error": cause, "hint": hint, "error_type": kind}


@watermark.command("keygen")
@click.option(
    "-o", "--output", default=None, type=click.Path(dir_okay=False), help="key file to write (default: print to stdout)"
)
@click.option("--force", is_flag=True, help="overwrite an existing key file")
def keygen_cmd(output: str | None, force: bool) -> None:
    """Make a random private key (keep it secret: whoever has it can find and remove marks)."""
    from . import keys

    text = keys.dumps(keys.generate())
    if output is None:
        click.echo(text, nl=False)
        return
    if os.path.exists(output) and not force:
        raise UsageError(f"{output!r} exists", "pass --force to overwrite it")
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as e:
        raise CcsmError(
            f"cannot write key file {output!r}: {e.strerror}",
            "choose a path in a folder you can write to",
        ) from None
    click.echo(f"wrote a new key to {output}", err=True)
