"""Options and helpers shared by commands."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import UsageError

if TYPE_CHECKING:
    from ..sampling import SamplingSettings

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


def backend_options(
    threads: int | None, items: tuple[str, ...], dtype: str | None = None, quantize: int | None = None
) -> dict[str, Any]:
    """The options handed to the backend's factory (only those the user set)."""
    options = parse_kv(items, "--backend-option")
    for key, value in (("threads", threads), ("dtype", dtype), ("quantize", quantize)):
        if value is not None:
            options[key] = value
    return options


@dataclass(frozen=True)
class ModelChoice:
    """What `model_options` read: the speech model, its tokenizer and codec, and the backend."""

    model: str | None
    tokenizer: str | None
    mimi: str | None
    backend: str | None
    threads: int | None
    backend_option: tuple[str, ...]
    dtype: str | None
    quantize: str | None

    def backend_options(self) -> dict[str, Any]:
        """The options for the backend's factory (only those the user set)."""
        quantize = int(self.quantize) if self.quantize else None
        return backend_options(self.threads, self.backend_option, self.dtype, quantize)

    def speech(self) -> Any:
        """The `Speech` these values name; a note when it is the demo model."""
        from ..loading.demo import NOTICE
        from ..speech import load_speech

        sp = load_speech(self.model, self.backend, tokenizer=self.tokenizer, mimi=self.mimi, **self.backend_options())
        if sp.demo:
            click.echo(f"note: {NOTICE}", err=True)
        return sp


def model_options(f: Callable[..., T]) -> Callable[..., T]:
    """``--model``, ``--tokenizer``, ``--mimi``, ``--backend``, ``--threads``, ``--backend-option``,
    ``--dtype``, ``--quantize``: the command receives them as one `ModelChoice`, ``models``."""

    @functools.wraps(f)
    def command(*args: Any, **kw: Any) -> T:
        models = ModelChoice(**{name: kw.pop(name) for name in ModelChoice.__dataclass_fields__})
        return f(*args, models=models, **kw)

    for opt in reversed(
        [
            click.option(
                "--model",
                "-m",
                envvar="CCSM_MODEL",
                help="CSM folder, .gguf file, Hugging Face repo id, or 'demo'. [env: CCSM_MODEL]",
            ),
            click.option(
                "--tokenizer",
                type=click.Path(exists=True, dir_okay=False),
                help="tokenizer.json or .model, if not with the model.",
            ),
            click.option("--mimi", type=click.Path(dir_okay=False), help="Mimi codec weights, if not with the model."),
            click.option(
                "--backend",
                "-b",
                envvar="CCSM_BACKEND",
                default=None,
                help="Compute backend (see `ccsm backends`). [env: CCSM_BACKEND]",
            ),
            click.option(
                "--threads", type=click.IntRange(min=1), default=None, help="Threads for backends that use them."
            ),
            click.option("--backend-option", multiple=True, metavar="KEY=VALUE", help="Option passed to the backend."),
            click.option(
                "--dtype",
                type=click.Choice(["f32", "f16", "bf16"]),
                default=None,
                help="Compute/weight precision, for backends that offer it (mlx).",
            ),
            click.option(
                "--quantize",
                type=click.Choice(["4", "8"]),
                default=None,
                help="Group-wise 4- or 8-bit matrix weights, for backends that offer it (mlx).",
            ),
        ]
    ):
        command = opt(command)
    return command


def sampling_options(
    defaults: Mapping[str, Any],
    *,
    helps: Mapping[str, str] | None = None,
    topk_flags: Sequence[str] = ("--top-k",),
    sampler: bool = False,
    extra: Sequence[Callable[[Any], Any]] = (),
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """The sampling options; `sampling_from` makes a `SamplingSettings` of their values.

    ``defaults`` and ``helps`` are keyed by `SamplingSettings` field (a default other than None is
    shown). ``topk_flags`` names top-k (its parameter, and so its config key, follows the first);
    ``sampler`` adds ``--sampler``; ``extra`` options are listed after ``--logit-bias``.
    """
    helps = {"temperature": "0 = greedy.", **(helps or {})}

    def opt(name: str, *decls: str, **kw: Any) -> Callable[[Any], Any]:
        default = defaults.get(name)
        return click.option(*decls, default=default, show_default=default is not None, help=helps.get(name), **kw)

    options = [
        opt("temperature", "--temperature", "-t", type=click.FloatRange(min=0)),
        opt("topk", *topk_flags, type=click.IntRange(min=1)),
        opt("top_p", "--top-p", type=click.FloatRange(0, 1, min_open=True)),
        opt("min_p", "--min-p", type=click.FloatRange(0, 1)),
        opt("repetition_penalty", "--repetition-penalty", type=click.FloatRange(min=0, min_open=True)),
        opt("frequency_penalty", "--frequency-penalty", type=click.FloatRange(-2, 2)),
        opt("presence_penalty", "--presence-penalty", type=click.FloatRange(-2, 2)),
        click.option("--logit-bias", multiple=True, metavar="ID=BIAS", help=helps.get("logit_bias")),
        *extra,
        *([opt("sampler", "--sampler")] if sampler else []),
        opt("seed", "--seed", type=int),
    ]

    def decorate(f: Callable[..., T]) -> Callable[..., T]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def sampling_from(kw: Mapping[str, Any]) -> SamplingSettings:
    """The `SamplingSettings` of the values of `sampling_options` (other keys are ignored)."""
    from ..sampling import SamplingSettings

    return SamplingSettings(
        temperature=kw["temperature"],
        topk=kw["topk"] if "topk" in kw else kw["top_k"],
        top_p=kw["top_p"],
        min_p=kw["min_p"],
        repetition_penalty=kw["repetition_penalty"],
        frequency_penalty=kw["frequency_penalty"],
        presence_penalty=kw["presence_penalty"],
        logit_bias=parse_bias(kw["logit_bias"]) or None,
        sampler=kw.get("sampler"),
        seed=kw["seed"],
    )


def progress_bar(items: Iterable[T], total: int, show: bool | None, desc: str) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar on stderr (by default only on a terminal)."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if show is None else show
    return tqdm(items, total=total, unit="frame", disable=not show, desc=desc, leave=False)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns (the last one unpadded), the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip())
