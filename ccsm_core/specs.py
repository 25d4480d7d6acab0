"""What a plugin registers: one frozen dataclass per kind, built from ``register(...)`` calls.

``register(name, factory, **keywords)`` inside a ``register_<kind>`` hook builds the kind's spec
(`BackendSpec`, `FormatSpec`, `TokenizerSpec`, `SamplerSpec`, `WatermarkerSpec`): the keywords
are the spec's fields. An unknown keyword or a value of the wrong type raises `PluginError`,
which marks the plugin ``failed``. `KINDS` maps each kind to its hook and spec class; the plugin
manager, the registries, the hook specifications and docs/plugins.md (``scripts/gen_plugin_docs.py``)
all follow it.

Each field's ``metadata["doc"]`` says what the keyword means; the docs are generated from it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

from .errors import PluginError

__all__ = [
    "Spec",
    "BackendSpec",
    "FormatSpec",
    "TokenizerSpec",
    "SamplerSpec",
    "WatermarkerSpec",
    "Kind",
    "KINDS",
    "keywords",
    "make_spec",
]

# Fields every spec carries that are not ``register`` keywords.
_BOOKKEEPING = ("name", "factory", "plugin", "conflict_with")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, kw_only=True)
class Spec:
    """One registered thing: its name, its factory, which plugin gave it, and its keywords."""

    name: str
    factory: Callable[..., Any]
    plugin: str
    summary: str = field(default="", metadata=_doc("one line describing it, shown in listings"))
    # plugins that registered the same name too (the name is then unusable)
    conflict_with: list[str] = field(default_factory=list, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            value, tp = getattr(self, f.name), hints[f.name]
            if isinstance(value, list) and any(get_origin(a) is tuple for a in _members(tp)):
                value = tuple(value)  # a list is accepted where a tuple is asked for
                object.__setattr__(self, f.name, value)
            if not _fits(value, tp):
                raise PluginError(
                    f"{self._where()}: {f.name} must be {_expected(tp, f.type)}, "
                    f"got {value!r} ({type(value).__name__}){_advice(value, tp)}",
                    "fix the plugin's registration (see docs/plugins.md)",
                )
        self._check()

    def _check(self) -> None:
        """Checks of values beyond their types (subclasses)."""

    def _where(self) -> str:
        hook = next((k.hook for k in KINDS.values() if k.spec is type(self)), type(self).__name__)
        return f"{hook}: {self.name!r}"


@dataclass(frozen=True, kw_only=True)
class BackendSpec(Spec):
    """A compute backend: ``factory(**options) -> Backend``."""

    priority: int = field(
        default=0,
        metadata=_doc(
            "the available backend with the highest priority is the default (ties: registration order); "
            "`ccsm bench` passes over a negative one unless asked for it"
        ),
    )
    available: Callable[[], str | None] | None = field(
        default=None,
        metadata=_doc(
            "called lazily: `None` when the backend can run here, else a one-line reason; never load "
            "native libraries at import. Without it the backend is always available"
        ),
    )
    devices: tuple[str, ...] = field(
        default=("cpu",), metadata=_doc("the devices it computes on, shown by `ccsm backends`")
    )
    describe: Callable[[], str] | None = field(
        default=None,
        metadata=_doc(
            "details shown by `ccsm backends` when it is available (threads, SIMD features, devices); called lazily"
        ),
    )
    batching: bool = field(
        default=False,
        metadata=_doc(
            "computes several streams in one pass (CSM frames and Mimi decoding), each exactly as alone "
            "(the backend has `matmul_rows`); without it a batch's streams are computed one after another"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class FormatSpec(Spec):
    """A weight file format: ``factory(path, *, validate=True) -> WeightSource``."""

    suffixes: tuple[str, ...] = field(
        default=(),
        metadata=_doc('file name suffixes it reads (`(".gguf",)`), the fallback when no sniff recognises a file'),
    )
    sniff: Callable[[bytes], bool] | None = field(
        default=None,
        metadata=_doc('recognises the format from a file\'s first 64 bytes (`lambda b: b[:4] == b"GGUF"`)'),
    )


@dataclass(frozen=True, kw_only=True)
class TokenizerSpec(Spec):
    """A text tokenizer: ``factory(source) -> Tokenizer``."""

    sniff: Callable[[Any], bool] | None = field(
        default=None,
        metadata=_doc(
            "whether it handles `source` (a path, or a GGUF metadata mapping); a source is given to "
            "the first tokenizer whose sniff accepts it. Without it the tokenizer is used only by name"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class SamplerSpec(Spec):
    """A logit processor or a sampler: ``factory(**params)`` returns the callable."""

    kind: Literal["processor", "sampler"] = field(
        metadata=_doc(
            "`processor`: `(tokens, logits) -> logits`, run in the order given; `sampler`: "
            "`(logprobs, rng) -> int`, picks the id after the processors"
        )
    )


@dataclass(frozen=True, kw_only=True)
class WatermarkerSpec(Spec):
    """An audio watermark method: ``factory(key: bytes, **params) -> Watermarker``."""

    payload_bits: int = field(metadata=_doc("how many bits of payload one mark carries (at least 1)"))
    sample_rates: tuple[int, ...] | None = field(
        default=None, metadata=_doc("the sample rates it supports; `None` for any")
    )
    default: bool = field(
        default=False, metadata=_doc("mark generated audio with this method unless the user names another")
    )
    public_key: bytes | None = field(
        default=None,
        metadata=_doc("the key used when the user gives none (public, so a mark made with it proves nothing)"),
    )
    default_payload: int = field(
        default=0, metadata=_doc("the payload written into generated audio (below `2**payload_bits`)")
    )
    read_key: Callable[[str], bytes] | None = field(
        default=None,
        metadata=_doc(
            "`read_key(path) -> bytes` reads the plugin's key-file format; without it the key is the file's raw bytes"
        ),
    )

    def _check(self) -> None:
        if self.payload_bits < 1:
            raise PluginError(
                f"{self._where()}: payload_bits must be at least 1, got {self.payload_bits}",
                "fix the plugin's registration (see docs/plugins.md)",
            )
        if not 0 <= self.default_payload < 2**self.payload_bits:
            raise PluginError(
                f"{self._where()}: default_payload {self.default_payload} does not fit {self.payload_bits} bits",
                "fix the plugin's registration (see docs/plugins.md)",
            )


class Kind(NamedTuple):
    """A kind of registered thing: the hook that registers it and the spec it builds."""

    hook: str
    spec: type[Spec]


#: Every kind: the single source for the plugin manager, its registries and the hook checks.
KINDS: Mapping[str, Kind] = types.MappingProxyType(
    {
        "backends": Kind("register_backends", BackendSpec),
        "formats": Kind("register_formats", FormatSpec),
        "tokenizers": Kind("register_tokenizers", TokenizerSpec),
        "samplers": Kind("register_samplers", SamplerSpec),
        "watermarkers": Kind("register_watermarkers", WatermarkerSpec),
    }
)


def keywords(spec: type[Spec]) -> list[Field[Any]]:
    """The fields of ``spec`` that ``register`` takes as keywords: the kind's own, then ``summary``."""
    own = [f for f in fields(spec) if f.name not in _BOOKKEEPING]
    return [f for f in own if f.name != "summary"] + [f for f in own if f.name == "summary"]


def make_spec(kind: str, name: str, factory: Callable[..., Any], plugin: str, options: Mapping[str, Any]) -> Spec:
    """The spec of ``kind`` for ``register(name, factory, **options)`` by ``plugin``.

    Raises `PluginError` for an unknown or missing keyword (with a "did you mean" hint) and for a
    value of the wrong type."""
    import difflib

    hook, cls = KINDS[kind]
    known = [f.name for f in keywords(cls)]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            raise PluginError(
                f"{hook}: {name!r}: unknown keyword {key!r} - {hint}",
                "fix the plugin's registration (see docs/plugins.md)",
            )
    hints = _hints(cls)
    for f in keywords(cls):
        if f.name not in options and f.default is MISSING and f.default_factory is MISSING:
            raise PluginError(
                f"{hook}: {name!r}: missing keyword {f.name!r} ({_expected(hints[f.name], f.type)})",
                "fix the plugin's registration (see docs/plugins.md)",
            )
    return cls(name=name, factory=factory, plugin=plugin, **options)


# -- type checks -------------------------------------------------------------------------
_HINTS: dict[type[Spec], dict[str, Any]] = {}


def _hints(cls: type[Spec]) -> dict[str, Any]:
    """The resolved annotations of ``cls`` (computed once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the type ``tp`` (the annotations the specs use)."""
    origin = get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in _members(tp))
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in get_args(tp))
    if origin is Callable or tp is Callable:
        return callable(value)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
    if origin is list:
        return isinstance(value, list)
    if tp in (int, float):
        return isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _members(tp: Any) -> tuple[Any, ...]:
    """The types of a union, or ``(tp,)``."""
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)


def _expected(tp: Any, text: Any) -> str:
    """``tp`` in words for an error message (``text`` is the annotation as written)."""
    args = _members(tp)
    optional = type(None) in args
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1 and (get_origin(rest[0]) is Callable or rest[0] is Callable):
        return "callable" + (" or None" if optional else "")
    if len(rest) == 1 and get_origin(rest[0]) is Literal:
        return " or ".join(repr(a) for a in get_args(rest[0])) + (" or None" if optional else "")
    return str(text)


def _advice(value: Any, tp: Any) -> str:
    if isinstance(value, str) and any(get_origin(a) is tuple for a in _members(tp)):
        return f" - write ({value!r},) for one"
    return ""
