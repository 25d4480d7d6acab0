"""ccsm plugin entry point: registers the watermark methods and the ``ccsm watermark`` commands.

Imports only ``ccsm_core`` and click here; numpy and soundfile load when a method is used.
"""

from __future__ import annotations

from typing import Any

from ccsm_core import hookimpl

from . import DEFAULT_METHOD, METHODS, PAYLOAD_BITS, PUBLIC_DEFAULT_KEY, create

SUMMARIES = {
    "ss-stft": "spread spectrum on 62.5 Hz STFT bands, 0.5-7 kHz, masked by the signal's own spectrum",
    "patchwork": "patchwork on pairs of band energies, 0.5-7 kHz",
}


def _factory(name: str) -> Any:
    def factory(key: bytes, **params: Any) -> Any:
        return create(name, key, **params)

    factory.__name__ = f"create_{name.replace('-', '_')}"
    factory.__doc__ = f"A {name} watermarker for ``key`` (params: strength_db, threshold)."
    return factory


def _read_key(path: str) -> bytes:
    from .keys import load

    return load(path)


@hookimpl
def register_watermarkers(register: Any) -> None:
    for name in METHODS:
        summary = SUMMARIES.get(name, "") + (" (default)" if name == DEFAULT_METHOD else "")
        register(
            name,
            _factory(name),
            payload_bits=PAYLOAD_BITS,
            sample_rates=None,
            summary=summary,
            default=name == DEFAULT_METHOD,
            public_key=PUBLIC_DEFAULT_KEY,
            read_key=_read_key,
        )


@hookimpl
def register_commands(cli: Any) -> None:
    from .cli import watermark

    cli.add_command(watermark)
