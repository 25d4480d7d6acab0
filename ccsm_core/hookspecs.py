"""Every extension point of ccsm.

A plugin is a module with functions decorated by ``ccsm_core.hookimpl`` whose names are the
hook names below. Each ``register_*`` hook receives one argument, ``register``, a callable of
the shape ``register(name: str, factory: Callable[..., T], **keywords) -> None``. Call it once
per thing the plugin provides. The keywords are the fields of the kind's spec in
``ccsm_core.specs`` (`BackendSpec`, `FormatSpec`, `TokenizerSpec`, `SamplerSpec`,
`WatermarkerSpec`; listed in docs/plugins.md): an unknown keyword or a value of the wrong type
marks the plugin ``failed``. Declare hook arguments without default values (pluggy passes
``None`` for defaulted arguments) and keep the plugin module cheap to import: import heavy
libraries inside the factories, never at module level.

The core's own backends, formats, tokenizers and samplers register through these same hooks
(see ``ccsm_core/builtin/``), so a built-in and a third-party plugin look alike.

Whatever a plugin raises where the core calls it (import, hooks, ``available()``, ``sniff``,
factories, a watermarker's methods), ``SystemExit`` and ``KeyboardInterrupt`` included, is
contained (``ccsm_core/plugin_code.py``): the plugin is marked ``failed`` or the user gets one
line naming it. Raise a ``CcsmError`` subclass with a hint to tell the user what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ccsm")
hookimpl = pluggy.HookimplMarker("ccsm")  # plugins use it as ``ccsm_core.hookimpl``

Register = Callable[..., None]


@hookspec
def register_backends(register: Register) -> None:
    """Register compute backends. Keywords: the fields of `ccsm_core.specs.BackendSpec`.

    - ``factory(**options) -> Backend``: an object implementing the lazy tensor contract of
      ``ccsm_core.backends.base.Backend``. Options a backend understands (``threads=``, ...)
      are passed through from ``--threads``/``--dtype``/``--quantize``/``--backend-option`` and
      the Python API (only those the user set); raise ``UsageError`` for options you do not know.
    - ``available() -> str | None``: called lazily; ``None`` when usable, else a one-line reason
      ("mlx not importable: No module named 'mlx'"). Never load native libraries at import.

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
    """Register weight file formats (loaders). Keywords: the fields of `ccsm_core.specs.FormatSpec`.

    - ``factory(path, *, validate=True) -> WeightSource``: a mapping-like object of lazy
      tensors (``ccsm_core.tensors.WeightSource``), plus ``metadata``. Validate
      headers, offsets and shapes against the file size before returning; raise
      ``ccsm_core.errors.FormatError`` naming the file and the problem.

    .. versionadded:: 0.1
    """


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register text tokenizers. Keywords: the fields of `ccsm_core.specs.TokenizerSpec`.

    - ``factory(source) -> Tokenizer``: ``source`` is a path (a ``tokenizer.json``, a
      SentencePiece ``.model``) or a metadata mapping (GGUF). The tokenizer has
      ``encode(text, *, add_special=True) -> list[int]``, ``decode(ids) -> str``,
      ``bos_id``, ``eos_id`` and ``vocab_size``.

    .. versionadded:: 0.1
    """


@hookspec
def register_samplers(register: Register) -> None:
    """Register logit processors and samplers. Keywords: the fields of `ccsm_core.specs.SamplerSpec`.

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
    """Register audio watermark methods. Keywords: the fields of `ccsm_core.specs.WatermarkerSpec`.

    - ``factory(key: bytes, **params) -> Watermarker`` with
      ``embed(audio, sample_rate, payload: int) -> audio`` and
      ``detect(audio, sample_rate) -> WatermarkResult`` (``present``, ``score``, ``payload``,
      ``p_value``). ``audio`` is float32, shape ``(n,)`` or ``(n, channels)``.
      Optionally ``stream(sample_rate, payload) -> Stream`` for streamed output, with
      ``push(block) -> marked samples`` (those that are final; a small fixed look-ahead may hold
      some back) and ``flush() -> the rest``; all pushed and flushed samples together have the
      input's length. ``ccsm run --stream`` and the server's streamed speech use it
      (`ccsm_core.watermark.AppliedWatermark.stream`); without it streamed output is unmarked.
    - ``default=True``: ``ccsm run`` marks generated audio with this method unless the user names
      another, keyed by ``--watermark-key FILE`` (read by ``read_key``) or else ``public_key``.

    .. versionadded:: 0.1
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add CLI commands to the ``ccsm`` click group.

    ``cli`` is the ``click.Group``; add ``@cli.command()`` or ``@cli.group()``. Import heavy
    modules inside the command functions so ``ccsm --help`` stays fast.

    .. versionadded:: 0.1
    """
