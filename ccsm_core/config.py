"""The optional user config file: default option values per command.

Looked up in this order: ``--config PATH``, ``$CCSM_CONFIG``, ``$XDG_CONFIG_HOME/ccsm/config.toml``
(``~/.config/ccsm/config.toml``). TOML with one table per command (a sub-table per subcommand,
``[voice.add]``), keys as option names::

    [run]
    model = "~/models/csm-1b"
    backend = "ggml-cpu"
    temperature = 0.8
    max-audio-ms = 20000

Every key of a known command must be one of its options, with a value the option accepts (a
string, a whole number, a finite number or true/false; a list only for a repeatable option):
anything else is refused naming the key and the file.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_CONFIG_BYTES = 1 << 20


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ccsm" / "config.toml"


def load_config(path: str | Path | None = None, commands: click.Group | None = None) -> dict[str, dict[str, Any]]:
    """Command name -> {parameter name: default}. A missing default-location file is fine. With
    ``commands`` (the CLI), each known command's table is checked against its options."""
    from .limits import regular_file

    explicit = path or os.environ.get("CCSM_CONFIG")
    p = Path(explicit).expanduser() if explicit else user_config_path()
    if not p.exists():
        if explicit:
            raise UsageError(f"config file {p} does not exist", "fix --config or CCSM_CONFIG")
        return {}
    regular_file(p, "config file")
    hint = f"fix or remove {p}"
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise UsageError(f"config file {p} is larger than {MAX_CONFIG_BYTES >> 20} MiB", hint)
        data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        raise UsageError(f"config file {p} is not valid TOML: {e}", hint) from None
    out: dict[str, dict[str, Any]] = {}
    for command, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"config file {p}: [{command}] must be a table of option = value", hint)
        cmd = commands.commands.get(command) if commands is not None else None
        out[command] = _table(p, command, table, cmd)
    return out


def _table(p: Path, where: str, table: dict[str, Any], cmd: click.Command | None) -> dict[str, Any]:
    """One command's defaults keyed by parameter name (checked against ``cmd`` when known)."""
    if cmd is None:
        return {k.replace("-", "_"): v for k, v in table.items()}
    out: dict[str, Any] = {}
    params = _params_by_key(cmd)
    for key, value in table.items():
        if isinstance(cmd, click.Group) and key in cmd.commands:
            if not isinstance(value, dict):
                raise UsageError(f"config file {p}: [{where}.{key}] must be a table", f"fix or remove {p}")
            out[key] = _table(p, f"{where}.{key}", value, cmd.commands[key])
            continue
        param = params.get(key.replace("-", "_"))
        if param is None:
            raise UsageError(
                f"config file {p}: [{where}] {key} is not an option of ccsm {where.replace('.', ' ')}",
                f"fix or remove the key in {p}; see 'ccsm {where.replace('.', ' ')} --help'",
            )
        out[param.name or key] = _value(p, where, key, value, param, cmd)
    return out


def _params_by_key(cmd: click.Command) -> dict[str, click.Parameter]:
    """The command's parameters by name and by each long flag (``top-k`` and ``topk``)."""
    out: dict[str, click.Parameter] = {}
    for param in cmd.params:
        if param.name:
            out[param.name] = param
        for opt in param.opts:
            if opt.startswith("--"):
                out.setdefault(opt[2:].replace("-", "_"), param)
    return out


def _value(p: Path, where: str, key: str, value: Any, param: click.Parameter, cmd: click.Command) -> Any:
    """``value`` as ``param`` takes it, or a `UsageError` naming the key and the file."""
    many = param.multiple or param.nargs != 1
    items = value if isinstance(value, list) and many else [value]
    for item in items:
        ok = isinstance(item, (str, int, bool)) or (isinstance(item, float) and math.isfinite(item))
        if isinstance(item, list) and param.multiple and param.nargs != 1:
            ok = all(isinstance(x, (str, int, bool)) for x in item)
        if not ok:
            kind = (
                "a list"
                if isinstance(item, list)
                else "not a finite number"
                if isinstance(item, float)
                else f"a {type(item).__name__}"
            )
            raise UsageError(
                f"config file {p}: [{where}] {key} = {_short(value)} is {kind}",
                f"give {key} a {'list of values' if many else 'single value'} in {p}",
            )
    for item in items:
        _check_paths(p, where, key, param.type, item)
    try:
        return param.type_cast_value(click.Context(cmd), value)
    except click.BadParameter as e:
        raise UsageError(
            f"config file {p}: [{where}] {key} = {_short(value)}: {' '.join(e.format_message().split())}",
            f"fix the value of {key} in {p}",
        ) from None
    except (TypeError, ValueError, OverflowError):  # a value click's type cannot take at all
        raise UsageError(
            f"config file {p}: [{where}] {key} = {_short(value)} is not a value it takes",
            f"fix the value of {key} in {p}; see 'ccsm {where.replace('.', ' ')} --help'",
        ) from None


def _check_paths(p: Path, where: str, key: str, kind: click.ParamType, value: Any) -> None:
    """A path must be given as a string (click would take a number for a file descriptor)."""
    if isinstance(kind, click.Tuple) and isinstance(value, list):
        for sub, item in zip(kind.types, value):
            _check_paths(p, where, key, sub, item)
    elif isinstance(kind, (click.Path, click.File)) and not isinstance(value, str):
        raise UsageError(
            f"config file {p}: [{where}] {key} = {_short(value)} is not a path", f'write it as a string, {key} = "..."'
        )


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
