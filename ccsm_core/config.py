"""The optional user config file: default option values per command.

Looked up in this order: ``--config PATH``, ``$CCSM_CONFIG``, ``$XDG_CONFIG_HOME/ccsm/config.toml``
(``~/.config/ccsm/config.toml``). TOML with one table per command, keys as option names::

    [run]
    model = "~/models/csm-1b"
    backend = "ggml-cpu"
    temperature = 0.8
    max-audio-ms = 20000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ccsm" / "config.toml"


def load_config(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Command name -> {parameter name: default}. A missing default-location file is fine."""
    explicit = path or os.environ.get("CCSM_CONFIG")
    p = Path(explicit).expanduser() if explicit else user_config_path()
    if not p.exists():
        if explicit:
            raise UsageError(f"config file {p} does not exist", "fix --config or CCSM_CONFIG")
        return {}
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"config file {p} is not valid TOML: {e}", "fix or remove the file") from None
    out: dict[str, dict[str, Any]] = {}
    for command, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"config file {p}: [{command}] must be a table of option = value")
        out[command] = {k.replace("-", "_"): v for k, v in table.items()}
    return out
