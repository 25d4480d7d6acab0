"""``ccsm encode`` / ``ccsm decode``: audio <-> Mimi codes, with the model's codec."""

from __future__ import annotations

from pathlib import Path

import click

from ..files import atomic_path, check_output
from .common import ModelChoice, input_path, model_options


def read_codes(path: str, num_codebooks: int = 32):
    """A ``.npy`` of codes as ``[codebooks, T]`` int64; accepts ``[T, 32]`` (``--codes-out``) too."""
    return as_codes(load_npy(path), path, num_codebooks)


def load_npy(path: str):
    """The integer array of a codes ``.npy``, checked against the file before it is read
    (`ccsm_core.formats.codes.load_codes_npy`)."""
    from ..formats.codes import load_codes_npy

    return load_codes_npy(input_path(path, "codes file"))


def as_codes(arr, path: str, num_codebooks: int):
    """``arr`` as ``[codebooks, T]`` int64 codes in range, or a `FormatError` naming ``path``."""
    from ..formats.codes import as_codes as checked

    return checked(arr, path, num_codebooks)


def _codec(models: ModelChoice):
    """The Mimi codec of ``--mimi``, or the one with ``--model``."""
    from ..backends import get_backend
    from ..errors import ModelError
    from ..loading.mimi import load_codec
    from ..loading.sources import resolve_model

    be = get_backend(models.backend, **models.backend_options())
    codec = load_codec(Path(".") if models.mimi else resolve_model(models.model), models.mimi, be)
    if codec is None:
        raise ModelError("no Mimi codec weights found", "pass --mimi FILE or a --model folder with mimi.safetensors")
    return codec


@click.command()
@click.argument("audio", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Codes file (.npy, frames x 32).")
@model_options
def encode(
    audio: str,
    output: str,
    models: ModelChoice,
) -> None:
    """Encode an AUDIO file (any rate, mixed to mono, resampled to 24 kHz) into Mimi codes.

    \b
    Example:
      ccsm encode voice.wav -o voice.codes.npy --model ~/csm-1b
    """
    import numpy as np

    from ..audio import read_audio
    from ..models.mimi_blocks import encode_blocks

    input_path(audio, "audio file")
    check_output(output)
    codec = _codec(models)
    codes = encode_blocks(codec, read_audio(audio, codec.sample_rate))
    with atomic_path(output) as tmp, open(tmp, "wb") as fh:
        np.save(fh, codes.T)  # a file object: numpy adds no .npy to the name
    click.echo(f"{codes.shape[1]} frames -> {output}", err=True)


@click.command()
@click.argument("codes", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, help="Audio file (.wav/.flac/.ogg) or '-' for raw float32.")
@click.option("--pcm16", is_flag=True, help="16-bit PCM WAV instead of 32-bit float.")
@click.option("--sample-rate", type=click.IntRange(min=8000, max=192000), default=None, help="Resample the output.")
@model_options
def decode(
    codes: str,
    output: str,
    pcm16: bool,
    sample_rate: int | None,
    models: ModelChoice,
) -> None:
    """Decode Mimi CODES (.npy, frames x 32 or 32 x frames) into audio.

    \b
    Example:
      ccsm decode frames.npy -o out.wav --model ~/csm-1b
    """
    import numpy as np

    from ..audio import audio_format, write_audio
    from ..models.mimi_blocks import decode_blocks

    input_path(codes, "codes file")
    if output != "-":
        audio_format(output)
        check_output(output)
    raw = load_npy(codes)
    codec = _codec(models)
    arr = as_codes(raw, codes, codec.num_codebooks)
    wave = np.concatenate([np.zeros(0, np.float32), *decode_blocks(codec, arr)])
    if output == "-":
        write_audio(output, wave, codec.sample_rate, pcm16=pcm16, out_rate=sample_rate)
    else:
        with atomic_path(output, keep_suffix=True) as tmp:
            write_audio(str(tmp), wave, codec.sample_rate, pcm16=pcm16, out_rate=sample_rate)
    click.echo(f"{arr.shape[1]} frames -> {output}", err=True)
