"""GGUF files: a text model (``load_text_model``, a short greedy run, the chat template) and a
CSM GGUF (``load_csm`` and its Mimi), mutated byte by byte or value by value in the metadata."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .case import Case
from .mutate import HUGE_INTS, INTERESTING_FLOATS, INTERESTING_INTS, dumps, mutated_bytes, mutated_json
from .seeds import MIMI_CONFIG
from .target import Target

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
_CODES = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "B", U64: "Q", I64: "q", F64: "d"}
_NP = {np.dtype(np.float32): F32, np.dtype(np.int32): I32, np.dtype(np.uint32): U32, np.dtype(np.int64): I64}
_NP.update({np.dtype(np.uint8): U8, np.dtype(np.int8): I8, np.dtype(np.float64): F64, np.dtype(np.bool_): BOOL})
Typed = tuple[int, Any]  # (GGUF value type, value); arrays: (ARR, (element type, [values]))


def _pack(vtype: int, value: Any) -> bytes:
    if vtype == STR:
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
        return struct.pack("<Q", len(raw)) + raw
    if vtype == ARR:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_pack(etype, v) for v in items)
    code = _CODES[vtype]
    if code == "f":  # beyond float32's range: the infinity of its sign
        x = float(value)
        return struct.pack("<f", x if abs(x) <= 3.4e38 or x != x else math.copysign(math.inf, x))
    if code == "d":
        return struct.pack("<d", float(value))
    bits = struct.calcsize(code) * 8
    return struct.pack("<" + code.upper() if code.islower() else "<" + code, int(value) % 2**bits)


def _typed(key: str, value: Any, vtype: int) -> Typed:
    """A parsed metadata value back with its GGUF type (array element types inferred)."""
    if vtype != ARR:
        return vtype, value
    if isinstance(value, np.ndarray):
        return ARR, (_NP.get(value.dtype, I32), value.tolist())
    if value and all(isinstance(v, str) for v in value):
        return ARR, (STR, value)
    if value and all(isinstance(v, float) for v in value):
        return ARR, (F32, value)
    if value and all(isinstance(v, list) for v in value):
        return ARR, (ARR, [_typed(key, v, ARR)[1] for v in value])
    return ARR, (I32, value)


def gguf_bytes(path: Path, metadata: dict[str, Typed]) -> bytes:
    """The GGUF file at ``path`` with its metadata replaced by ``metadata`` (tensor infos and data
    kept, offsets relative to the data section as before)."""
    from ...formats.gguf_reader import read_header

    h = read_header(path)
    raw = path.read_bytes()
    out = bytearray(b"GGUF" + struct.pack("<IQQ", h.version, len(h.tensors), len(metadata)))
    for key, (vtype, value) in metadata.items():
        out += _pack(STR, key) + struct.pack("<I", vtype) + _pack(vtype, value)
    for t in h.tensors:
        out += _pack(STR, t.name) + struct.pack("<I", len(t.ne)) + b"".join(struct.pack("<Q", d) for d in t.ne)
        out += struct.pack("<IQ", t.type_id, t.offset - h.data_offset)
    out += b"\0" * (-len(out) % h.alignment)
    return bytes(out) + raw[h.data_offset :]


def metadata_of(path: Path) -> dict[str, Typed]:
    from ...formats.gguf_reader import read_header

    h = read_header(path)
    return {k: _typed(k, v, h.value_types[k]) for k, v in h.metadata.items()}


def typed_values() -> st.SearchStrategy[Typed]:
    """Metadata values of every GGUF type, mostly ones a field should refuse."""
    ints = st.sampled_from(INTERESTING_INTS + HUGE_INTS)
    floats = st.sampled_from(INTERESTING_FLOATS)
    strings = st.one_of(
        st.sampled_from(["", "two", "gpt2", "llama", "nan", "\ud800"]),
        st.text(max_size=12),
        st.sampled_from([b"\xff\xfe", b"\xc3", b"a\x00b"]),
        st.builds(lambda n: "x" * n, st.sampled_from([1 << 12, 1 << 20])),
    )
    return st.one_of(
        st.tuples(st.sampled_from([U8, I8, U16, I16, U32, I32, U64, I64]), ints),
        st.tuples(st.sampled_from([F32, F64]), floats),
        st.tuples(st.just(BOOL), st.integers(0, 255)),
        st.tuples(st.just(STR), strings),
        st.tuples(st.just(ARR), st.tuples(st.sampled_from([I32, U64]), st.lists(ints, max_size=6))),
        st.tuples(st.just(ARR), st.tuples(st.just(F32), st.lists(floats, max_size=6))),
        st.tuples(st.just(ARR), st.tuples(st.just(STR), st.lists(strings, max_size=6))),
        st.tuples(st.just(ARR), st.tuples(st.just(ARR), st.just([(I32, [1, 2]), (STR, ["a"])]))),
    )


TEMPLATES = [
    "{{ 'x' * 2000000000 }}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{{ i }}{% endfor %}{% endfor %}",
    "{{ messages[0].__class__.__mro__ }}",
    "{{ raise_exception('no') }}",
    "{% for m in messages %}{{ m.content|join(m.content * 99999) }}{% endfor %}",
    "{{ undefined_name.attr }}",
    "{% if %}",
    "{{ ''.join(['a'] * 100000000) }}",
    "{% set ns = namespace(x=[]) %}{% for i in range(10000000) %}{% set ns.x = ns.x + [i] %}{% endfor %}",
    "{{ (messages * 100000000)|length }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
]


@st.composite
def _metadata_edits(draw: st.DrawFn, seed: dict[str, Typed], json_keys: tuple[str, ...]) -> dict[str, Typed]:
    md = dict(seed)
    keys = sorted(md)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["value", "value", "value", "delete", "json", "template"]))
        if action == "delete":
            md.pop(key, None)
        elif action == "json" and json_keys:
            jkey = draw(st.sampled_from(json_keys))
            vtype, text = md.get(jkey, (None, None))
            parsed = _shallow_json(text) if vtype == STR and isinstance(text, str) else None
            if parsed is not None:
                md[jkey] = (STR, dumps(draw(mutated_json(parsed))))
        elif action == "template":
            md["tokenizer.chat_template"] = (STR, draw(st.sampled_from(TEMPLATES)))
        else:
            md[key] = draw(typed_values())
    return md


def _shallow_json(text: str) -> Any:
    """``text`` parsed, or None where an earlier edit made it no JSON or nested it too deeply to
    edit further."""
    from ...errors import FormatError
    from ...limits import loads_json

    try:
        return loads_json(text, "metadata")
    except FormatError:
        return None


def gguf_cases(
    path: Path, json_keys: tuple[str, ...] = (), extra: dict[str, Typed] | None = None
) -> st.SearchStrategy[Case]:
    """Cases of one file ``model.gguf``: metadata edits (mostly) or byte edits of the seed;
    ``extra`` adds metadata to the seed's."""
    from ...formats.gguf_reader import read_header

    raw, md = path.read_bytes(), metadata_of(path) | dict(extra or {})
    header_end = read_header(path).data_offset
    return st.one_of(
        _metadata_edits(md, json_keys).map(lambda m: Case({"model.gguf": gguf_bytes(path, m)})),
        _metadata_edits(md, json_keys).map(lambda m: Case({"model.gguf": gguf_bytes(path, m)})),
        mutated_bytes(raw, hot=header_end).map(lambda b: Case({"model.gguf": b})),
    )


def run_text_model(path: Path) -> None:
    """Load a text model, run two greedy tokens, render its chat template."""
    from ...loading.text import load_text_model
    from ...textgen import TextSession, TextSettings, render_chat

    loaded = load_text_model(path)
    TextSession(loaded).generate("ab cd", TextSettings(temperature=0, max_tokens=2))
    render_chat(loaded.metadata, loaded.tokenizer, [{"role": "user", "content": "hi"}])


def _run_text(folder: Path) -> None:
    run_text_model(folder / "model.gguf")


def run_csm(path: Path) -> None:
    """Load a CSM model and generate two frames of speech."""
    from ...generator import GenerationSettings, Generator
    from ...loading.csm import load_csm

    loaded = load_csm(path)
    list(Generator(loaded.model, loaded.tokenizer).frames("Hi.", settings=GenerationSettings(max_audio_ms=160, seed=0)))


def _run_csm(folder: Path) -> None:
    run_csm(folder / "model.gguf")


TARGETS = [
    Target(
        "gguf-text",
        "text",
        "GGUF text model: load_text_model, 2 greedy tokens, chat template",
        lambda s: gguf_cases(s.text_gguf),
        _run_text,
    ),
    Target(
        "gguf-csm",
        "files",
        "CSM GGUF: load_csm (csm.config, csm.mimi_config, tokenizer JSON, tensors), 2 frames",
        lambda s: gguf_cases(
            s.csm_gguf,
            ("csm.config", "csm.mimi_config", "tokenizer.huggingface.json"),
            {"csm.mimi_config": (STR, json.dumps(MIMI_CONFIG))},
        ),
        _run_csm,
    ),
]
