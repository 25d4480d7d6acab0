"""Every extension point of ccsm.

A plugin is a module with functions decorated by ``ccsm_core.hookimpl`` whose names are the
hook names below. Each ``register_*`` hook receives one argument, ``register``, a callable of
the shape ``register(name: str, factory: Callable[..., T], **metadata) -> None``. Call it once
per thing the plugin provides. Declare hook arguments without default values (pluggy passes
``None`` for defaulted arguments) and keep the plugin module cheap to import: import heavy
libraries inside the factories, never at module level.

The core's own backends, formats, tokenizers and samplers register through these same hooks
(see ``ccsm_core/builtin/``), so a built-in and a third-party plugin look alike.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("ccsm")

Register = Callable[..., None]


@hookspec
def register_backends(register: Register) -> None:
    """Register compute backends.

    ``register(name, factory, *, priority: int = 0, available=None, devices=("cpu",), summary="",
    describe=None)``

    - ``factory(**options) -> Backend``: an object implementing the lazy tensor contract of
      ``ccsm_core.backends.base.Backend``. Options a backend understands (``threads=``, ...)
      are passed through from ``--threads``/``--dtype``/``--quantize``/``--backend-option`` and
      the Python API (only those the user set); raise ``UsageError`` for options you do not know.
    - ``available() -> str | None``: called lazily; ``None`` when usable, else a one-line reason
      ("mlx not importable: No module named 'mlx'"). Never load native libraries at import.
    - ``priority``: the highest-priority available backend is the default.
    - ``describe() -> str``: optional details shown by ``ccsm backends`` when available
      (threads, SIMD features, devices); called lazily.

    Raise ``ccsm_core.errors.BackendUnavailable`` from the factory if it cannot start.
    Check the backend with ``ccsm_core.testing.conformance.BackendConformance``.

    Example::

        @hookimpl
        def register_backends(register):
            register("mybackend", lambda **opts: MyBackend(**opts), priority=5,
                     available=lambda: None, summary="my fast backend")

    .. versionadded:: 0.1
    """


@hookspec
def register_formats(register: Register) -> None:
    """Register weight file formats (loaders).

    ``register(name, factory, *, suffixes: tuple[str, ...] = (), sniff=None, summary="")``

    - ``factory(path, *, validate=True) -> WeightSource``: a mapping-like object of lazy
      tensors (``ccsm_core.formats.tensor.WeightSource``), plus ``metadata``. Validate
      headers, offsets and shapes against the file size before returning; raise
      ``ccsm_core.errors.FormatError`` naming the file and the problem.
    - ``sniff(first_bytes: bytes) -> bool``: recognise the format from its first 64 bytes
      (``lambda b: b[:4] == b"GGUF"``). ``suffixes`` is the fallback (``(".gguf",)``).

    .. versionadded:: 0.1
    """


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register text tokenizers.

    ``register(name, factory, *, sniff=None, summary="")``

    - ``factory(source) -> Tokenizer``: ``source`` is a path (a ``tokenizer.json``, a
      SentencePiece ``.model``) or a metadata mapping (GGUF). The tokenizer has
      ``encode(text, *, add_special=True) -> list[int]``, ``decode(ids) -> str``,
      ``bos_id``, ``eos_id`` and ``vocab_size``.
    - ``sniff(source) -> bool``: whether this tokenizer handles ``source``.

    .. versionadded:: 0.1
    """


@hookspec
def register_samplers(register: Register) -> None:
    """Register logit processors and samplers.

    ``register(name, factory, *, kind: "processor" | "sampler", summary="")``

    - ``factory(**params)`` validates its parameters (raise ``ccsm_core.errors.UsageError``
      naming the bad value) and returns a callable:
      processors: ``(tokens: np.ndarray, logits: np.ndarray) -> np.ndarray``, where ``tokens``
      are the ids generated so far in this stream; samplers:
      ``(logprobs: np.ndarray, rng: np.random.Generator) -> int``.
    - Processors run in the order given, then one sampler picks the id. All on host NumPy.

    Example::

        @hookimpl
        def register_samplers(register):
            register("clip", lambda limit=30.0: lambda toks, lg: np.clip(lg, -limit, limit),
                     kind="processor", summary="clip logits to +-limit")

    .. versionadded:: 0.1
    """


@hookspec
def register_watermarkers(register: Register) -> None:
    """Register audio watermark methods.

    ``register(name, factory, *, payload_bits: int, sample_rates=None, summary="", default=False,
    public_key=None, default_payload=0, read_key=None)``

    - ``factory(key: bytes, **params) -> Watermarker`` with
      ``embed(audio, sample_rate, payload: int) -> audio`` and
      ``detect(audio, sample_rate) -> WatermarkResult`` (``present``, ``score``, ``payload``,
      ``p_value``). ``audio`` is float32, shape ``(n,)`` or ``(n, channels)``.
    - ``sample_rates``: the rates it supports, ``None`` for any.
    - ``default``: mark generated audio with this method unless the user names another;
      ``public_key`` (bytes): the key used when the user gives none (public, so it proves
      nothing); ``default_payload``: the payload written into generated audio; ``read_key(path)
      -> bytes`` reads the plugin's key-file format (default: the file's raw bytes).

    .. versionadded:: 0.1
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add CLI commands to the ``ccsm`` click group.

    ``cli`` is the ``click.Group``; add ``@cli.command()`` or ``@cli.group()``. Import heavy
    modules inside the command functions so ``ccsm --help`` stays fast.

    .. versionadded:: 0.1
    """
