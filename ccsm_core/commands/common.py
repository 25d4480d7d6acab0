"""Options and helpers shared by commands."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import FormatError, UsageError

if TYPE_CHECKING:
    from ..sampling import SamplingSettings

T = TypeVar("T")


MAX_SEED = 2**63 - 1
MAX_SPEAKER = 1_000_000  # speaker ids
MAX_TOKEN_ID = 1 << 31  # ids of any vocabulary are below this
MAX_BIAS = 1e6  # a larger logit bias is no different from -inf / always


class Real(click.FloatRange):
    """A finite number (NaN and infinities refused), within the range given."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def parse_kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}`` (values parsed as bounded JSON when they
    are, else kept as text)."""
    from ..limits import loads_json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r} is not KEY=VALUE", f"write {what} KEY=VALUE, e.g. {what} threads=4")
        try:
            out[key.strip()] = loads_json(raw, what)
        except FormatError:
            out[key.strip()] = raw
    return out


def parse_bias(items: tuple[str, ...]) -> dict[int, float]:
    """``--logit-bias ID=BIAS`` values: an id in 0..2^31-1 and a finite bias in +-1e6, or -inf
    (banned); the model then checks the id against its vocabulary."""
    bias: dict[int, float] = {}
    hint = f"give ID=BIAS with an integer id >= 0 and a bias within +-{MAX_BIAS:g}, or -inf to ban the id"
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            token, value = int(key.strip()), float(raw)
        except ValueError:
            raise UsageError(f"--logit-bias {item!r} is not an integer ID=BIAS", hint) from None
        finite = value == -math.inf or abs(value) <= MAX_BIAS  # False for NaN
        if not sep or not 0 <= token < MAX_TOKEN_ID or not finite:
            raise UsageError(f"--logit-bias {item!r} is out of range", hint)
        bias[token] = value
    return bias


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.?)", re.DOTALL)


def unescape(text: str, what: str) -> str:
    """``\\n``, ``\\t``, ``\\xHH``, ``\\uHHHH``... in ``text`` as the characters they name; any other
    backslash sequence is a `UsageError` (other text, non-ASCII included, is kept as it is)."""

    def one(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq in _ESCAPES:
            return _ESCAPES[seq]
        if len(seq) > 1 and seq[0] in "xuU":
            code = int(seq[1:], 16)
            if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code)
        raise UsageError(
            f"{what} {text!r} has an unknown escape \\{seq}",
            "use \\n, \\t, \\r, \\\\, \\xHH or \\uHHHH, or the character itself",
        )

    return _ESCAPE.sub(one, text)


def printable(text: str) -> str:
    """``text`` with what stdout cannot encode (say, undecodable bytes kept as surrogates)
    written as backslash escapes."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except LookupError:
        encoding = "ascii"
    except UnicodeEncodeError:
        pass
    return text.encode(encoding, "backslashreplace").decode(encoding)


def input_path(path: str | os.PathLike[str], what: str, *, folder_ok: bool = False) -> str:
    """``path`` if it names something that can be read without blocking: a regular, non-empty
    file (or, with ``folder_ok``, a folder). FIFOs, devices and sockets are refused up front."""
    from ..limits import regular_file

    p = str(path)
    if folder_ok and os.path.isdir(p):
        return p
    size = regular_file(p, what).stat().st_size
    if size == 0:
        raise UsageError(f"{what} {p} is empty", "pass the complete file")
    return p


def input_or_name(value: str | None, what: str, *, folder_ok: bool = True) -> str | None:
    """A ``--model``-like value: an existing path is checked with `input_path`; anything else
    (a Hugging Face repo id, 'demo') is passed on unchecked."""
    if value is None or not os.path.lexists(value):
        return value
    return input_path(value, what, folder_ok=folder_ok)


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

    def checked(self) -> ModelChoice:
        """These values, with every path that exists checked readable (no FIFO, device, ...)."""
        return dataclasses.replace(
            self,
            model=input_or_name(self.model, "model"),
            tokenizer=input_path(self.tokenizer, "tokenizer file") if self.tokenizer else None,
            mimi=input_path(self.mimi, "Mimi weights file") if self.mimi else None,
        )

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
        models = ModelChoice(**{name: kw.pop(name) for name in ModelChoice.__dataclass_fields__}).checked()
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
                type=click.Path(dir_okay=False),
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
                "--threads", type=click.IntRange(1, 1024), default=None, help="Threads for backends that use them."
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
        opt("temperature", "--temperature", "-t", type=Real(0, 100)),
        opt("topk", *topk_flags, type=click.IntRange(1, 1 << 24)),
        opt("top_p", "--top-p", type=Real(0, 1, min_open=True)),
        opt("min_p", "--min-p", type=Real(0, 1)),
        opt("repetition_penalty", "--repetition-penalty", type=Real(0.01, 100)),
        opt("frequency_penalty", "--frequency-penalty", type=Real(-2, 2)),
        opt("presence_penalty", "--presence-penalty", type=Real(-2, 2)),
        click.option("--logit-bias", multiple=True, metavar="ID=BIAS", help=helps.get("logit_bias")),
        *extra,
        *([opt("sampler", "--sampler")] if sampler else []),
        opt("seed", "--seed", type=click.IntRange(0, MAX_SEED)),
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
