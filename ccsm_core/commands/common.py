"""Options and helpers shared by commands."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable, TypeVar

import click

from ..errors import UsageError

T = TypeVar("T")


def parse_kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they are)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def parse_bias(items: tuple[str, ...]) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in parse_kv(items, "--logit-bias").items():
        try:
            bias[int(key)] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--logit-bias {key}={value} needs an integer id and a number") from None
    return bias


def backend_options(threads: int | None, items: tuple[str, ...], dtype: str | None = None,
                    quantize: int | None = None) -> dict[str, Any]:
    """The options handed to the backend's factory (only those the user set)."""
    options = parse_kv(items, "--backend-option")
    for key, value in (("threads", threads), ("dtype", dtype), ("quantize", quantize)):
        if value is not None:
            options[key] = value
    return options


def model_options(f: Callable[..., T]) -> Callable[..., T]:
    """``--model``, ``--tokenizer``, ``--mimi``, ``--backend``, ``--threads``, ``--backend-option``."""
    for opt in reversed([
        click.option("--model", "-m", envvar="CCSM_MODEL",
                     help="CSM folder, .gguf file, Hugging Face repo id, or 'demo'. [env: CCSM_MODEL]"),
        click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False),
                     help="tokenizer.json or .model, if not with the model."),
        click.option("--mimi", type=click.Path(dir_okay=False), help="Mimi codec weights, if not with the model."),
        click.option("--backend", "-b", envvar="CCSM_BACKEND", default=None,
                     help="Compute backend (see `ccsm backends`). [env: CCSM_BACKEND]"),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for backends that use them."),
        click.option("--backend-option", multiple=True, metavar="KEY=VALUE", help="Option passed to the backend."),
        click.option("--dtype", type=click.Choice(["f32", "f16", "bf16"]), default=None,
                     help="Compute/weight precision, for backends that offer it (mlx)."),
        click.option("--quantize", type=click.Choice(["4", "8"]), default=None,
                     help="Group-wise 4- or 8-bit matrix weights, for backends that offer it (mlx)."),
    ]):
        f = opt(f)
    return f


def progress_bar(items: Iterable[T], total: int, show: bool | None, desc: str) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar on stderr (by default only on a terminal)."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if show is None else show
    return tqdm(items, total=total, unit="frame", disable=not show, desc=desc, leave=False)


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Aligned columns (the last one unpadded), the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip())
