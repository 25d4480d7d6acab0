"""Audio and codes: WAV files (header fields lying about rate, channels, sizes; read with
``read_audio`` and encoded by a tiny Mimi), Mimi codes ``.npy`` (header lying about shape and
type; ``read_codes`` and decoded) and ``.ccsmvoice`` files (``read_voice``)."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from .case import Case
from .mutate import dumps, mutated_bytes, mutated_json
from .seeds import Seeds
from .target import Target

MIMI_FILES = ("mimi.safetensors", "mimi_config.json")


def _mimi_links(seeds: Seeds) -> dict[str, Path]:
    """The seed's tiny Mimi, linked into a case (its weights and config are not mutated)."""
    return {name: seeds.csm_dir / name for name in MIMI_FILES}


@functools.lru_cache(maxsize=1)
def _mimi_at(weights: str, config: str) -> Any:
    from ...loading.mimi import load_mimi

    return load_mimi(weights, config)


def case_mimi(folder: Path) -> Any:
    """The (unmutated) Mimi a case links to, loaded once per process."""
    return _mimi_at(*(str((folder / name).resolve()) for name in MIMI_FILES))


def wav_header(
    fmt: int, channels: int, rate: int, bits: int, data_size: int, riff_size: int | None, extra: bytes = b""
) -> bytes:
    block = channels * max(bits, 8) // 8
    fmt_chunk = (
        struct.pack(
            "<HHIIHH", fmt % 2**16, channels % 2**16, rate % 2**32, (rate * block) % 2**32, block % 2**16, bits % 2**16
        )
        + extra
    )
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt_chunk))
        + fmt_chunk
        + b"data"
        + struct.pack("<I", data_size % 2**32)
    )
    return b"RIFF" + struct.pack("<I", (riff_size if riff_size is not None else len(body) + data_size) % 2**32) + body


def wav_files(seed: bytes) -> st.SearchStrategy[bytes]:
    """WAV files made from ``seed``: lying header fields or byte edits."""
    return _wav_cases(seed, {}).map(lambda case: case.files["audio.wav"])


def codes_files(seed: bytes) -> st.SearchStrategy[bytes]:
    """``.npy`` files made from ``seed``: lying headers or byte edits."""
    return _codes_cases(seed, {}).map(lambda case: case.files["codes.npy"])


def _wav_cases(seed: bytes, links: dict[str, Path]) -> st.SearchStrategy[Case]:
    pcm = seed[44:]
    ints = st.sampled_from([0, 1, 2, 3, 8, 255, 65535, 2**31, 2**32 - 1])
    structured = st.builds(
        lambda fmt, ch, rate, bits, size, riff, cut: Case(
            {"audio.wav": wav_header(fmt, ch, rate, bits, len(pcm) if size is None else size, riff) + pcm[:cut]}, links
        ),
        st.sampled_from([1, 3, 0, 2, 6, 7, 0xFFFE, 0xFFFF]),
        st.one_of(st.sampled_from([1, 2]), ints),
        st.one_of(st.sampled_from([24000, 8000, 44100, 48000]), ints, st.sampled_from([4, 7, 11, 100])),
        st.one_of(st.sampled_from([16, 32, 8, 24]), ints),
        st.one_of(st.none(), ints),
        st.one_of(st.none(), ints),
        st.one_of(st.just(len(pcm)), st.integers(0, len(pcm))),
    )
    return st.one_of(structured, mutated_bytes(seed, hot=44).map(lambda b: Case({"audio.wav": b}, links)))


def _run_wav(folder: Path) -> None:
    from ...audio import read_audio

    case_mimi(folder).encode(read_audio(folder / "audio.wav", 24_000))


NPY_DESCR = ["<i8", "<i4", "|u1", "<u2", "<f4", "|b1", "<U8", "|O", "|V8", "<c16", ">i8", "<i8x", "", "[('a', '<i4')]"]
NPY_SHAPES: list[Any] = [
    (6, 32),
    (32, 6),
    (0, 32),
    (1, 6, 32),
    (2**40, 32),
    (-1, 32),
    (32,),
    (),
    (2**31, 2**31),
    (6, 32, 2**20),
    (32, 2**33),
    "x",
]


def npy_bytes(header: str, data: bytes, version: int = 1) -> bytes:
    text = header.encode("latin1", "replace")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) % 2**16) + text + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text)) + text + data


def _codes_cases(seed: bytes, links: dict[str, Path]) -> st.SearchStrategy[Case]:
    header_len = struct.unpack("<H", seed[8:10])[0]
    header, data = ast.literal_eval(seed[10 : 10 + header_len].decode("latin1")), seed[10 + header_len :]
    structured = st.builds(
        lambda descr, order, shape, version, cut: Case(
            {
                "codes.npy": npy_bytes(
                    repr({"descr": descr, "fortran_order": order, "shape": shape}), data[:cut], version
                )
            },
            links,
        ),
        st.one_of(st.just(header["descr"]), st.sampled_from(NPY_DESCR)),
        st.sampled_from([False, True, 1, "x"]),
        st.one_of(st.just(header["shape"]), st.sampled_from(NPY_SHAPES)),
        st.sampled_from([1, 1, 2, 3, 9]),
        st.one_of(st.just(len(data)), st.integers(0, len(data))),
    )
    raw_header = st.builds(
        lambda text: Case({"codes.npy": npy_bytes(text, data)}, links),
        st.sampled_from(
            [
                "{",
                "{'descr': '<i8'}",
                "[" * 10000,
                "{'descr': '<i8', 'fortran_order': False, 'shape': (6, 32), 'x': 1}",
                "__import__('os')",
            ]
        ),
    )
    return st.one_of(structured, raw_header, mutated_bytes(seed, hot=128).map(lambda b: Case({"codes.npy": b}, links)))


def _run_codes(folder: Path) -> None:
    from ...commands.codec import read_codes

    case_mimi(folder).decode(read_codes(str(folder / "codes.npy")))


def _voice_cases(seed: bytes) -> st.SearchStrategy[Case]:
    first, rest = seed.split(b"\n", 1)
    header_text, payload = rest.split(b"\n", 1)
    header = json.loads(header_text)

    def rebuild(head: Any, fix_sum: bool) -> Case:
        if fix_sum and isinstance(head, dict):
            head["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        return Case({"voice.ccsmvoice": first + b"\n" + dumps(head).encode("utf-8", "surrogatepass") + b"\n" + payload})

    return st.one_of(
        st.builds(rebuild, mutated_json(header), st.booleans()),
        mutated_bytes(seed, hot=len(first) + len(header_text) + 2).map(lambda b: Case({"voice.ccsmvoice": b})),
    )


def _run_voice(folder: Path) -> None:
    from ...voices import read_voice

    read_voice(folder / "voice.ccsmvoice")


TARGETS = [
    Target(
        "wav",
        "files",
        "WAV audio: read_audio at 24 kHz, encoded by a tiny Mimi",
        lambda s: _wav_cases(s.wav, _mimi_links(s)),
        _run_wav,
    ),
    Target(
        "codes-npy",
        "files",
        "Mimi codes .npy: read_codes, decoded by a tiny Mimi",
        lambda s: _codes_cases(s.codes, _mimi_links(s)),
        _run_codes,
    ),
    Target("voice", "files", ".ccsmvoice: read_voice", lambda s: _voice_cases(s.voice), _run_voice),
]
