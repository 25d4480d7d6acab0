"""Bounds on what a file may make ccsm do: memory it may ask for, JSON it may hold, and which
paths may be opened at all (regular files only: a FIFO would block, a device never ends).

The memory budget is ``--max-memory`` / ``CCSM_MAX_MEMORY`` (e.g. ``8G``) or, by default, the
memory available when first asked. Every allocation whose size comes from a file is checked
against it with `check_allocation` before it is made.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import FormatError, UsageError

JSON_MAX_DEPTH = 64  # nesting of objects and arrays in any JSON a file holds
JSON_MAX_DIGITS = 64  # digits of one number in such JSON
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_budget: int | None = None


def parse_size(text: str) -> int:
    """``"512M"``, ``"8G"``, ``"1.5G"`` or a byte count as bytes; `UsageError` otherwise."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] else ""
    try:
        value = float(s[: len(s) - len(unit)])
    except ValueError:
        value = float("nan")
    if not 0 < value < 1 << 50 or value != value:
        raise UsageError(f"memory size {text!r} is not valid", "give a size such as 512M or 8G")
    return int(value * _UNITS[unit])


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``), else the physical memory, else 8 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def set_max_memory(nbytes: int | None) -> None:
    """Set the memory budget (None: from ``CCSM_MAX_MEMORY`` or the available memory again)."""
    global _budget
    _budget = nbytes


def max_memory() -> int:
    """The memory budget in bytes."""
    global _budget
    if _budget is None:
        env = os.environ.get("CCSM_MAX_MEMORY", "").strip()
        _budget = parse_size(env) if env else available_memory()
    return _budget


def check_allocation(nbytes: int | float, what: str, hint: str = "the file is broken or too large") -> None:
    """`FormatError` when ``what`` would need more than the memory budget (or a bad size)."""
    if not nbytes >= 0 or nbytes > max_memory():  # `not >=` also catches NaN
        raise FormatError(
            f"{what} would need {_human(nbytes)}, more than the memory budget of {_human(max_memory())}",
            f"{hint}; or raise --max-memory / CCSM_MAX_MEMORY",
        )


def _human(nbytes: int | float) -> str:
    if not nbytes >= 0 or nbytes == float("inf"):
        return str(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"


def _number(kind: type) -> Any:
    def parse(token: str) -> Any:
        if len(token) > JSON_MAX_DIGITS:
            raise ValueError(f"a number of {len(token)} characters")
        return kind(token)

    return parse


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > JSON_MAX_DEPTH:
                return depth
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads_json(text: str | bytes, where: str, hint: str = "restore the file") -> Any:
    """Parse JSON from a file with bounds: nesting at most `JSON_MAX_DEPTH`, numbers at most
    `JSON_MAX_DIGITS` characters, no NaN/Infinity; anything else is a one-line `FormatError`."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(
            text,
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not a JSON number")),
        )
    except RecursionError:
        raise FormatError(f"{where}: JSON nested too deeply", hint) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{where}: not valid JSON ({_short(e)})", hint) from None
    if _depth(value) > JSON_MAX_DEPTH:
        raise FormatError(f"{where}: JSON nested deeper than {JSON_MAX_DEPTH} levels", hint)
    return value


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 120 else text[:117] + "..."


def regular_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` if it is a regular file (symlinks followed); a FIFO, device, socket or folder is
    refused at once with a `UsageError`, before anything could block on it."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise UsageError(f"cannot open {what} {p}: {e.strerror or e}", "check the path") from None
    if stat.S_ISREG(mode):
        return p
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise UsageError(f"{what} {p} is {kind}", "pass a regular file")
