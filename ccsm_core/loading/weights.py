"""Every weight file is opened here, through the formats registry: sniffed first, then by suffix.

A format plugin (``register_formats``) that recognises a file's first bytes, or failing that
its suffix, loads it; pickled checkpoints are refused before any format is asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import FormatError, ModelError
from ..plugin_code import SigintWatch, guarded
from ..plugins import registry
from ..tensors import WeightSource

SNIFF_BYTES = 64  # what a format's ``sniff`` sees
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
PICKLE_HINT = (
    "ccsm never unpickles checkpoints; use the model.safetensors of the same model "
    "(sesame/csm-1b ships one), or on a trusted machine with torch run "
    "safetensors.torch.save_file(torch.load('ckpt.pt'), 'model.safetensors')"
)


def weight_suffixes() -> list[str]:
    """The suffixes of every registered format, in registry order (built-ins first)."""
    out: list[str] = []
    for entry in registry("formats"):
        out.extend(s for s in entry.suffixes if s not in out)
    return out


def format_of(path: str | Path) -> Any:
    """The registered format that reads ``path``: the first whose ``sniff`` accepts the file's
    first bytes, else the first whose suffixes include the file's; a `FormatError` if none."""
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise FormatError(f"{p} is a pickled PyTorch checkpoint", PICKLE_HINT)
    if not p.is_file():
        raise ModelError(
            f"weights {p} do not exist" if not p.exists() else f"{p} is not a file",
            "pass a weights file (or the folder that holds one)",
        )
    try:
        with open(p, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise FormatError(f"{p}: cannot read ({e.strerror or e})", "check the file's permissions") from None
    formats = list(registry("formats"))
    for entry in formats:
        if entry.sniff is not None and _sniffs(entry, head):
            return entry
    for entry in formats:
        if p.suffix.lower() in entry.suffixes:
            return entry
    known = ", ".join(f"{e.name} ({' '.join(e.suffixes) or 'no suffix'})" for e in formats)
    raise FormatError(
        f"{p}: no installed weight format recognises this file",
        f"known formats: {known}; a format plugin can add others",
    )


def _sniffs(entry: Any, head: bytes) -> bool:
    with SigintWatch() as watch:
        try:
            return bool(entry.sniff(head))
        except BaseException as e:  # a plugin's sniff that fails on odd bytes does not claim the file
            if watch.passes(e):
                raise
            return False


def open_weights(path: str | Path, *, validate: bool = True) -> WeightSource:
    """Open a weights file with the format that recognises it (see `format_of`)."""
    p = Path(path).expanduser()
    entry = format_of(p)
    call = guarded(entry.plugin, f"the factory of format {entry.name!r}")
    with call:
        source = entry.factory(p, validate=validate)
    if not isinstance(source, WeightSource):
        raise call.fail(f"returned {type(source).__name__} for {p}, not a ccsm_core.tensors.WeightSource")
    return source


def is_format(path: str | Path, name: str) -> bool:
    """Whether ``path`` is an existing file that the format called ``name`` recognises."""
    p = Path(path).expanduser()
    if not p.is_file():
        return False
    try:
        return format_of(p).name == name
    except (FormatError, ModelError):
        return False
