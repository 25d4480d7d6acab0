"""safetensors files: the header's JSON mutated (dtype, shape, data_offsets, ``__metadata__``,
nesting, numbers) or the file's bytes, opened with ``open_weights`` and every tensor read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import strategies as st

from .case import Case
from .mutate import dumps, mutated_bytes, mutated_json
from .target import Target


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header, data section) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def safetensors_bytes(header_text: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header_text)) + header_text + data


def safetensors_cases(path: Path, name: str = "model.safetensors") -> st.SearchStrategy[Case]:
    header, data = safetensors_parts(path)
    header = {"__metadata__": {"format": "pt"}, **header}
    raw = safetensors_bytes(json.dumps(header).encode(), data)
    return st.one_of(
        mutated_json(header).map(
            lambda h: Case({name: safetensors_bytes(dumps(h).encode("utf-8", "surrogatepass"), data)})
        ),
        mutated_json(header).map(
            lambda h: Case({name: safetensors_bytes(dumps(h).encode("utf-8", "surrogatepass"), data)})
        ),
        mutated_bytes(raw, hot=8 + len(json.dumps(header))).map(lambda b: Case({name: b})),
    )


def _run(folder: Path) -> None:
    from ...loading.weights import open_weights
    from ...tensors import float32_values

    source = open_weights(folder / "model.safetensors")
    for t in source.tensors.values():
        float32_values(t).sum()


TARGETS = [
    Target(
        "safetensors",
        "files",
        "safetensors: open_weights and every tensor read as float32",
        lambda s: safetensors_cases(s.hf_text / "model.safetensors"),
        _run,
    )
]
