"""``ccsm watermark embed|detect|keygen``. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ccsm_core.errors import CcsmError, FormatError, UsageError

from . import DEFAULT_METHOD, METHODS, PAYLOAD_BITS, PUBLIC_DEFAULT_KEY


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

    if not os.path.isfile(path):
        raise FormatError(f"audio file {path!r} not found")
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
        raise UsageError(str(e)) from None


@click.group("watermark")
def watermark() -> None:
    """Embed, detect and key keyed audio watermarks (plugin ccsm-watermark)."""


@watermark.command("embed")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="marked audio file")
@click.option("--key-file", default=None, help="private key (ccsm watermark keygen); default: the public key")
@click.option("--payload", default="0", show_default=True, help="32-bit payload, e.g. 0xC0FFEE42")
@click.option("--method", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD, show_default=True)
@click.option("--strength", type=float, default=None, help="modulation depth in dB (default: the method's)")
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
        raise UsageError(f"{input_path}: {e}") from None
    subtype = None
    if info is not None:
        fmt = os.path.splitext(output)[1].lstrip(".").upper() or "WAV"
        if fmt in sf.available_formats() and sf.check_format(fmt, info.subtype):
            subtype = info.subtype
    if subtype is None or not subtype.startswith(("FLOAT", "DOUBLE")):
        marked = np.clip(marked, -1.0, 1.0)
    try:
        sf.write(output, marked, rate, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise FormatError(
            f"cannot write {output!r}: {' '.join(str(e).split())}", "use a .wav or .flac output name"
        ) from None
    click.echo(f"marked {input_path} -> {output} ({method}, payload 0x{value:08X})", err=True)


@watermark.command("detect")
@click.argument("input_path", metavar="FILE", type=click.Path(dir_okay=False))
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
    type=float,
    default=1e-6,
    show_default=True,
    help="report present when the false-positive p-value is below this",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def detect_cmd(input_path: str, key_file: str | None, method: str, threshold: float, as_json: bool) -> None:
    """Say whether FILE carries a mark for the key, its payload and a p-value."""
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold {threshold} is not in (0, 1)")
    key = _key(key_file)
    audio, rate, _ = read_audio(input_path)
    names = list(METHODS) if method == "auto" else [method]
    best, best_name = None, names[0]
    for name in names:
        try:
            r = _watermarker(name, key, threshold=threshold).detect(audio, rate)
        except ValueError as e:
            raise UsageError(f"{input_path}: {e}") from None
        if best is None or r.p_value < best.p_value:
            best, best_name = r, name
    assert best is not None
    p = min(1.0, best.p_value * len(names))  # union bound over the methods tried
    present = None if best.present is None else p < threshold
    out = best.as_json()
    out.update(present=present, p_value=p, method=best_name, file=input_path)
    if not present:
        out["payload"] = None
    if as_json:
        click.echo(json.dumps(out))
        return
    word = {True: "present", False: "absent", None: "cannot tell"}[present]
    click.echo(f"{input_path}: watermark {word} (method {best_name}, p-value {p:.3g}, score {best.score:.1f})")
    if present:
        click.echo(f"payload: {out['payload'] or 'unreadable (mark found, payload check failed)'}")
    elif present is None:
        click.echo(f"reason: {best.reason}")


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
        raise CcsmError(f"cannot write key file {output!r}: {e.strerror}") from None
    click.echo(f"wrote a new key to {output}", err=True)
