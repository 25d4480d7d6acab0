"""Hostile CSM/Mimi configs, safetensors headers, codes files, voice files and audio: each gives
one `CcsmError` (one line, with a hint) from the real reader, and through the CLI exit 2 with a
single ``error: ... (hint: ...)`` line, before anything is sized or computed from the file."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ccsm_core import limits
from ccsm_core.cli import cli
from ccsm_core.errors import CcsmError
from ccsm_core.formats.safetensors import load_safetensors, save_safetensors
from ccsm_core.loading.csm import load_csm
from ccsm_core.models.config import CsmConfig
from ccsm_core.models.mimi import mimi_config

FIXTURE = Path(__file__).parent / "fixtures" / "csm-tiny"


def one_line_error(res: Any) -> str:
    """The CLI's single error line (exit 2, ``error: ... (hint: ...)``, no traceback)."""
    out = res.output.strip()
    assert res.exit_code == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "(hint: " in lines[0], out
    return lines[0]


def check_error(fn: Callable[[], Any], match: str) -> CcsmError:
    with pytest.raises(CcsmError, match=match) as e:
        fn()
    assert "\n" not in e.value.one_line() and e.value.hint
    return e.value


# --- safetensors headers ---------------------------------------------------------------------


def raw_safetensors(path: Path, header: Any, data: bytes = b"") -> Path:
    text = header if isinstance(header, (str, bytes)) else json.dumps(header)
    raw = text.encode() if isinstance(text, str) else text
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def entry(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape, "data_offsets": offsets}


SAFETENSORS_CASES = {
    "dtype a list": ({"w": entry(dtype=["F32"])}, "unsupported dtype list"),
    "dtype unknown": ({"w": entry(dtype="F128")}, "unsupported dtype F128"),
    "shape 2^64": ({"w": entry(shape=[1 << 64, 0])}, "malformed shape"),
    "shape negative": ({"w": entry(shape=[-2])}, "malformed shape"),
    "shape string": ({"w": entry(shape="2")}, "malformed shape"),
    "shape product overflows": ({"w": entry(shape=[8] * 8)}, "does not match"),
    "float offsets": ({"w": entry(offsets=[0.0, 8.0])}, "data_offsets"),
    "string offsets": ({"w": entry(offsets=["0", "8"])}, "data_offsets"),
    "three offsets": ({"w": entry(offsets=[0, 4, 8])}, "data_offsets"),
    "offsets past the end": ({"w": entry(offsets=[0, 1 << 40])}, "data_offsets"),
    "offsets reversed": ({"w": entry(shape=[0], offsets=[8, 0])}, "ends before it starts"),
    "metadata an int": ({"__metadata__": 5, "w": entry()}, "__metadata__"),
    "metadata of numbers": ({"__metadata__": {"a": 1}, "w": entry()}, "__metadata__"),
    "entry a list": ({"w": [1, 2]}, "malformed header entry"),
    "entry incomplete": ({"w": {"dtype": "F32"}}, "malformed header entry"),
    "overlapping": ({"a": entry(), "b": entry(shape=[1], offsets=[4, 8])}, "overlaps"),
    "overlapping exactly": ({"a": entry(), "b": entry()}, "overlaps"),
    "gap": ({"a": entry(shape=[1], offsets=[4, 8])}, "belong to no tensor"),
    "data left over": ({"a": entry(shape=[1], offsets=[0, 4])}, "cover 4 of the 8"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested"),
    "4300-digit number": ('{"w": {"dtype": "F32", "shape": [' + "9" * 4300 + '], "data_offsets": [0, 8]}}', "number"),
    "not UTF-8": (b'{"w\xff": 1}', "not valid JSON"),
    "not an object": ("[1, 2]", "not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_hostile_safetensors_header(tmp_path: Path, case: str) -> None:
    header, match = SAFETENSORS_CASES[case]
    path = raw_safetensors(tmp_path / "m.safetensors", header, b"\0" * 8)
    check_error(lambda: load_safetensors(path), match)


def test_good_safetensors_still_load(tmp_path: Path) -> None:
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.zeros(0, np.int64),
        "c": np.ones(3, np.int8),
        "d": np.zeros((1000, 0), np.float64),
    }
    save_safetensors(tmp_path / "m.safetensors", arrays, {"format": "pt"})
    src = load_safetensors(tmp_path / "m.safetensors")
    assert src.metadata == {"format": "pt"}
    for name, arr in arrays.items():
        np.testing.assert_array_equal(src.tensors[name].data.reshape(arr.shape), arr)


def test_header_length_beyond_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    check_error(lambda: load_safetensors(path), "header length")


def test_safetensors_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    check_error(lambda: load_safetensors(fifo), "FIFO")


def test_hostile_safetensors_through_the_cli(tiny_csm_dir: Path, cli_runner: Any, tmp_path: Path) -> None:
    raw_safetensors(tiny_csm_dir / "model.safetensors", {"w": entry(shape=[1 << 64])}, b"\0" * 8)
    res = cli_runner.invoke(cli, ["run", "Hi", "--model", str(tiny_csm_dir), "--codes-out", str(tmp_path / "c.npy")])
    assert "malformed shape" in one_line_error(res)


# --- CSM configs -----------------------------------------------------------------------------


def flavour(**change: Any) -> dict[str, Any]:
    base = {
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "embed_dim": 32,
        "intermediate_dim": 64,
        "max_seq_len": 2048,
        "norm_eps": 1e-5,
        "rope_base": 500000,
        "scale_factor": 32,
    }
    return base | change


def csm_dict(backbone: Any = None, **change: Any) -> dict[str, Any]:
    return {
        "backbone_flavor": "b",
        "decoder_flavor": "d",
        "text_vocab_size": 128,
        "flavors": {"b": flavour() if backbone is None else backbone, "d": flavour(num_layers=1, embed_dim=16)},
    } | change


CONFIG_CASES = {
    "num_heads 0": (csm_dict(flavour(num_heads=0)), "num_heads = 0"),
    "num_heads 2^31": (csm_dict(flavour(num_heads=1 << 31)), "num_heads"),
    "heads do not divide": (csm_dict(flavour(num_heads=3, num_kv_heads=3)), "heads into embed_dim"),
    "kv heads do not divide": (csm_dict(flavour(num_kv_heads=3)), "kv heads into heads"),
    "num_layers a string": (csm_dict(flavour(num_layers="two")), "num_layers = 'two'"),
    "embed_dim a float": (csm_dict(flavour(embed_dim=32.0)), "embed_dim = 32.0"),
    "num_layers true": (csm_dict(flavour(num_layers=True)), "num_layers = True"),
    "norm_eps negative": (csm_dict(flavour(norm_eps=-1e-5)), "norm_eps"),
    "norm_eps zero": (csm_dict(flavour(norm_eps=0)), "norm_eps"),
    "norm_eps a string": (csm_dict(flavour(norm_eps="nan")), "norm_eps"),
    "rope_base huge int": (csm_dict(flavour(rope_base=10**400)), "rope_base"),
    "rope_base tiny": (csm_dict(flavour(rope_base=1e-300)), "rope_base"),
    "scale_factor tiny": (csm_dict(flavour(scale_factor=1e-300)), "scale_factor"),
    "max_seq_len 2^31": (csm_dict(flavour(max_seq_len=1 << 31)), "max_seq_len"),
    "max_seq_len a list": (csm_dict(flavour(max_seq_len=[2048])), "max_seq_len"),
    "activation a number": (csm_dict(flavour(activation=3)), "activation"),
    "flavour a list": (csm_dict([1, 2]), "flavour is list"),
    "flavour null": (csm_dict(flavour() | {"num_layers": None}), "num_layers = None"),
    "flavour incomplete": (csm_dict({"num_layers": 1}), "incomplete flavour"),
    "flavors a list": (csm_dict() | {"flavors": [1]}, "flavors is list"),
    "backbone_flavor a list": (csm_dict(backbone_flavor=["b"]), "backbone_flavor"),
    "vocab a string": (csm_dict(text_vocab_size="128"), "text_vocab_size = '128'"),
    "codebooks 0": (csm_dict(audio_num_codebooks=0), "audio_num_codebooks"),
    "codebooks 2^40": (csm_dict(audio_num_codebooks=1 << 40), "audio_num_codebooks"),
    "config a list": ([1, 2, 3], "expected an object"),
    "config null": (None, "expected an object"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_hostile_csm_config(case: str) -> None:
    data, match = CONFIG_CASES[case]
    check_error(lambda: CsmConfig.from_dict(data), match)


def test_good_csm_config_reads() -> None:
    cfg = CsmConfig.from_dict(csm_dict())
    assert cfg.backbone.num_heads == 4 and cfg.decoder.embed_dim == 16


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        ("[" * 70 + "]" * 70, "nested"),
        ('{"text_vocab_size": ' + "9" * 4300 + "}", "number"),
        ('{"text_vocab_size": NaN}', "NaN"),
    ],
)
def test_unreadable_config_json(tiny_csm_dir: Path, text: str | bytes, match: str) -> None:
    path = tiny_csm_dir / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    check_error(lambda: load_csm(tiny_csm_dir, "numpy"), match)


def test_config_json_fifo_is_refused(tiny_csm_dir: Path) -> None:
    (tiny_csm_dir / "config.json").unlink()
    os.mkfifo(tiny_csm_dir / "config.json")
    check_error(lambda: load_csm(tiny_csm_dir, "numpy"), "FIFO")


@pytest.mark.parametrize("case", ["num_heads 0", "norm_eps negative", "num_layers a string", "config a list"])
def test_hostile_config_json_through_the_cli(tiny_csm_dir: Path, cli_runner: Any, tmp_path: Path, case: str) -> None:
    data, match = CONFIG_CASES[case]
    (tiny_csm_dir / "config.json").write_text(json.dumps(data))
    res = cli_runner.invoke(cli, ["run", "Hi", "--model", str(tiny_csm_dir), "--codes-out", str(tmp_path / "c.npy")])
    one_line_error(res)


def test_the_kv_cache_is_checked_against_the_memory_budget(tiny_csm_dir: Path, monkeypatch: Any) -> None:
    """A max_seq_len within the schema's range still may not allocate more than the budget."""
    cfg = json.loads((tiny_csm_dir / "config.json").read_text())
    for f in cfg["flavors"].values():
        f["max_seq_len"] = 1 << 16
    (tiny_csm_dir / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(limits, "_budget", 8 << 20)
    model = load_csm(tiny_csm_dir, "numpy").model
    check_error(model.new_caches, "the KV caches would need 16.0 MiB")


# --- transformers config.json of CSM ---------------------------------------------------------


def test_hf_csm_config_values_are_checked() -> None:
    from ccsm_core.loading.hf_csm import csm_config

    good = {
        "num_attention_heads": 4,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "depth_decoder_config": {
            "num_attention_heads": 2,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "intermediate_size": 32,
        },
    }
    assert csm_config(good, "config.json").backbone.embed_dim == 32
    for change, match in (
        ({"num_attention_heads": 0}, "num_attention_heads = 0"),
        ({"num_attention_heads": "4"}, "num_attention_heads = '4'"),
        ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps"),
        ({"max_position_embeddings": 1 << 40}, "max_position_embeddings"),
        ({"num_key_value_heads": 3}, "kv heads"),
        ({"depth_decoder_config": [1]}, "depth_decoder_config"),
        ({"num_codebooks": 1000}, "audio_num_codebooks"),
    ):
        check_error(lambda change=change: csm_config(good | change, "config.json"), match)


# --- CSM GGUF metadata -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def csm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ccsm_core.loading.csm_gguf import convert_csm
    from ccsm_core.testing.models import write_tiny_csm

    d = tmp_path_factory.mktemp("gguf")
    return convert_csm(write_tiny_csm(d / "tiny"), d / "tiny.gguf")


def rewrite_gguf(src: Path, dst: Path, meta: dict[str, Any]) -> Path:
    from ccsm_core.formats.gguf_reader import load_gguf
    from ccsm_core.formats.gguf_writer import write_gguf

    g = load_gguf(src)
    md = {k: v for k, v in g.metadata.items() if k != "general.architecture"} | meta
    return write_gguf(dst, md, dict(g.items()), "csm")


GGUF_CASES = {
    "config a list": ({"csm.config": "[1, 2]"}, "expected an object"),
    "config null": ({"csm.config": "null"}, "expected an object"),
    "config an int": ({"csm.config": 5}, "csm.config = 5 is not a text"),
    "config deeply nested": ({"csm.config": "[" * 5000 + "]" * 5000}, "nested"),
    "config a long number": ({"csm.config": "9" * 4300}, "number"),
    "config heads 0": ({"csm.config": json.dumps(csm_dict(flavour(num_heads=0)))}, "num_heads = 0"),
    "config eps NaN": ({"csm.config": '{"flavors": {"x": {"norm_eps": NaN}}}'}, "NaN"),
    "mimi config a list": ({"csm.mimi_config": "[1]"}, "expected an object"),
    "mimi seanet an int": ({"csm.mimi_config": '{"seanet": 5}'}, "seanet is int"),
    "mimi heads 0": ({"csm.mimi_config": '{"transformer": {"num_heads": 0}}'}, "num_heads = 0"),
    "tokenizer an int": ({"tokenizer.huggingface.json": 7}, "tokenizer.huggingface.json"),
}


@pytest.mark.parametrize("case", sorted(GGUF_CASES))
def test_hostile_csm_gguf_metadata(csm_gguf: Path, tmp_path: Path, case: str) -> None:
    meta, match = GGUF_CASES[case]
    path = rewrite_gguf(csm_gguf, tmp_path / "bad.gguf", meta)
    check_error(lambda: load_csm(path, "numpy"), match)


@pytest.mark.parametrize("case", ["config a list", "config heads 0", "mimi seanet an int"])
def test_hostile_csm_gguf_through_the_cli(csm_gguf: Path, tmp_path: Path, cli_runner: Any, case: str) -> None:
    path = rewrite_gguf(csm_gguf, tmp_path / "bad.gguf", GGUF_CASES[case][0])
    res = cli_runner.invoke(cli, ["run", "Hi", "--model", str(path), "--codes-out", str(tmp_path / "c.npy")])
    one_line_error(res)


# --- Mimi configs ----------------------------------------------------------------------------

MIMI_CASES = {
    "not an object": ([1], "expected an object"),
    "seanet a list": ({"seanet": [1]}, "seanet is list"),
    "transformer null": ({"transformer": None}, "transformer is NoneType"),
    "quantizer a string": ({"quantizer": "x"}, "quantizer is str"),
    "heads 0": ({"transformer": {"num_heads": 0}}, "num_heads = 0"),
    "heads do not divide": ({"transformer": {"num_heads": 7}}, "num_heads into d_model"),
    "ratios a string": ({"seanet": {"ratios": "8654"}}, "ratios"),
    "ratio 0": ({"seanet": {"ratios": [8, 0, 5, 4]}}, "ratios"),
    "dimension 2^40": ({"seanet": {"dimension": 1 << 40}}, "dimension"),
    "context 2^31": ({"transformer": {"context": 1 << 31}}, "context"),
    "sample rate 1": ({"sample_rate": 1}, "sample_rate = 1"),
    "frame rate NaN": ({"frame_rate": float("nan")}, "frame_rate"),
    "frame rate a string": ({"frame_rate": "12.5"}, "frame_rate"),
    "codebooks beyond n_q": ({"num_codebooks": 33}, "num_codebooks = 33"),
    "bins 0": ({"quantizer": {"bins": 0}}, "bins = 0"),
    "max_period negative": ({"transformer": {"max_period": -1}}, "max_period"),
}


@pytest.mark.parametrize("case", sorted(MIMI_CASES))
def test_hostile_mimi_config(case: str) -> None:
    config, match = MIMI_CASES[case]
    check_error(lambda: mimi_config(config), match)


def test_mimi_config_json_not_utf8(tmp_path: Path) -> None:
    from ccsm_core.loading.mimi import read_mimi_config

    path = tmp_path / "mimi_config.json"
    path.write_bytes(b'{"seanet": "\xff"}')
    check_error(lambda: read_mimi_config(path), "not valid JSON")
    path.write_text('{"seanet": 3}')
    check_error(lambda: read_mimi_config(path), "seanet is int")


def test_hostile_mimi_config_json_through_the_cli(tmp_path: Path, cli_runner: Any) -> None:
    folder = tmp_path / "mimi"
    folder.mkdir()
    (folder / "mimi.safetensors").symlink_to(FIXTURE / "mimi.safetensors")
    (folder / "mimi_config.json").write_bytes(b'{"transformer": {"num_heads": 0}}')
    codes = tmp_path / "c.npy"
    np.save(codes, np.zeros((2, 32), np.int64))
    weights = str(folder / "mimi.safetensors")
    res = cli_runner.invoke(cli, ["decode", str(codes), "-o", str(tmp_path / "o.wav"), "--mimi", weights])
    assert "num_heads = 0" in one_line_error(res)


# --- codes files -----------------------------------------------------------------------------


def npy_bytes(arr: np.ndarray) -> bytes:
    from ccsm_core.formats.codes import codes_bytes

    return codes_bytes(arr)


def lying_npy(shape: str, descr: str = "<i8", body: bytes = b"\0" * 64, version: bytes = b"\x01\x00") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    size = struct.pack("<H", len(header)) if version == b"\x01\x00" else struct.pack("<I", len(header))
    return b"\x93NUMPY" + version + size + header + body


CODES_CASES = {
    "shape lies (2.3 TiB)": (lying_npy("(10000000000, 32)"), "header claims shape .*, more than the file holds"),
    "shape lies (long)": (lying_npy("(1, 32)", "|u1"), "header claims shape .*, less than the file holds"),
    "negative dimension": (lying_npy("(-1, 32)"), "not a .npy|expected integer codes"),
    "float codes": (lying_npy("(2, 32)", "<f4", b"\0" * 256), "must be integers"),
    "object codes": (lying_npy("(2, 32)", "|O"), "must be integers, the file holds Python objects"),
    "no codebook dimension": (lying_npy("(8,)"), "expected integer codes"),
    "4-D": (lying_npy("(1, 1, 2, 32)"), "expected integer codes"),
    "nested header": (b"\x93NUMPY\x01\x00\x00\x10" + b"(" * 4096, "not a .npy"),
    "not npy": (b"hello world, not numpy", "not a .npy"),
    "empty": (b"", "not a .npy"),
    "version 9": (lying_npy("(1, 32)", version=b"\x09\x00"), "not a .npy"),
    "code too large": (None, "code 4096 is out of range"),
    "negative code": (None, "code -1 is out of range"),
    "over an hour": (lying_npy("(45001, 32)", "|u1", b"\0" * 45001 * 32), "more than 45000"),
}


@pytest.mark.parametrize("case", sorted(CODES_CASES))
def test_hostile_codes_file(tmp_path: Path, case: str) -> None:
    from ccsm_core.formats.codes import read_codes

    data, match = CODES_CASES[case]
    if data is None:
        codes = np.zeros((3, 32), np.int64)
        codes[1, 5] = 4096 if "large" in case else -1
        data = npy_bytes(codes)
    path = tmp_path / "c.npy"
    path.write_bytes(data)
    check_error(lambda: read_codes(path), match)


def test_codes_read_in_every_layout(tmp_path: Path) -> None:
    from ccsm_core.formats.codes import read_codes, write_codes

    codes = np.random.default_rng(0).integers(0, 2048, (32, 7))
    for name, arr in {
        "frames-first": codes.T.astype(np.int16),
        "codebooks-first": codes.astype(np.uint16),
        "batched": codes[None],
        "fortran": np.asfortranarray(codes.T),
    }.items():
        path = write_codes(tmp_path / f"{name}.bin", arr)
        assert path == tmp_path / f"{name}.bin" and path.exists()  # no .npy added
        got = read_codes(path)
        assert got.dtype == np.int64 and np.array_equal(got, codes), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.bin" for n in ("frames-first", "codebooks-first", "batched", "fortran")
    )


def test_codes_memory_budget(tmp_path: Path, monkeypatch: Any) -> None:
    from ccsm_core.formats.codes import read_codes

    path = tmp_path / "c.npy"
    path.write_bytes(npy_bytes(np.zeros((4000, 32), np.int64)))
    monkeypatch.setattr(limits, "_budget", 1 << 20)
    check_error(lambda: read_codes(path), "memory budget")


def test_codes_fifo_and_folder_are_refused(tmp_path: Path) -> None:
    from ccsm_core.formats.codes import read_codes

    os.mkfifo(tmp_path / "fifo.npy")
    check_error(lambda: read_codes(tmp_path / "fifo.npy"), "FIFO")
    (tmp_path / "dir.npy").mkdir()
    check_error(lambda: read_codes(tmp_path / "dir.npy"), "folder")
    check_error(lambda: read_codes(tmp_path / "missing.npy"), "does not exist")


# --- voice files -----------------------------------------------------------------------------


def test_voice_fifo_is_refused_before_it_blocks(tmp_path: Path) -> None:
    from ccsm_core.voices import VoiceStore, read_voice

    fifo = tmp_path / "v.ccsmvoice"
    os.mkfifo(fifo)
    check_error(lambda: read_voice(fifo), "FIFO")
    check_error(lambda: VoiceStore(tmp_path / "store").import_(fifo), "FIFO")


@pytest.mark.parametrize(
    "header,match",
    [
        (b"[" * 100_000, "nested"),
        (b'{"speaker": ' + b"9" * 4300 + b"}", "number"),
        (b'{"name": "\xff"}', "not JSON"),
        (b"5", "not a JSON object"),
    ],
)
def test_hostile_voice_header(tmp_path: Path, header: bytes, match: str) -> None:
    from ccsm_core.voices import read_voice

    path = tmp_path / "v.ccsmvoice"
    path.write_bytes(b"CCSMVOICE 1\n" + header + b"\n")
    check_error(lambda: read_voice(path), match)


# --- audio input -----------------------------------------------------------------------------


def wav_claiming(path: Path, rate: int, seconds: float = 0.1, real_rate: int = 24000) -> Path:
    """A 16-bit WAV whose header says ``rate`` Hz, holding ``seconds`` at ``real_rate``."""
    import soundfile as sf

    sf.write(str(path), np.zeros(int(real_rate * seconds), np.float32), real_rate, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    raw[24:28] = struct.pack("<I", rate)
    raw[28:32] = struct.pack("<I", rate * 2)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("rate", [1, 7999, 384_001, 1 << 31 - 1])
def test_implausible_sample_rate_refused_before_resampling(tmp_path: Path, rate: int, monkeypatch: Any) -> None:
    from ccsm_core import audio

    monkeypatch.setattr(audio, "resample", lambda *a: pytest.fail("resampled"))
    path = wav_claiming(tmp_path / "a.wav", rate, seconds=0.08)  # 4 KB
    check_error(lambda: audio.read_audio(path), "sample rate")


def test_audio_longer_than_allowed_is_refused_before_reading(tmp_path: Path, monkeypatch: Any) -> None:
    from ccsm_core import audio

    monkeypatch.setattr(audio, "_read_resampled", lambda *a: pytest.fail("read"))
    path = wav_claiming(tmp_path / "a.wav", 8000, seconds=3.0)
    check_error(lambda: audio.read_audio(path, max_seconds=2.0), "more than the 2 s")


def test_long_audio_is_resampled_in_blocks_as_at_once(tmp_path: Path) -> None:
    import soundfile as sf

    from ccsm_core.audio import BLOCK_FRAMES, read_audio, resample

    x = (np.random.default_rng(0).standard_normal(3 * BLOCK_FRAMES + 17) * 0.1).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), np.stack([x, -x * 0.5], 1), 48000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(tmp_path / "a.wav"), resample(x * 0.25, 48000, 24000), atol=1e-6)


def test_audio_fifo_is_refused(tmp_path: Path) -> None:
    from ccsm_core.audio import read_audio

    os.mkfifo(tmp_path / "a.wav")
    check_error(lambda: read_audio(tmp_path / "a.wav"), "FIFO")


def test_context_audio_checked_against_the_context_before_encoding(monkeypatch: Any) -> None:
    from ccsm_core.generator import Segment
    from ccsm_core.speech import load_speech

    speech = load_speech("demo", "numpy")
    gen = speech.generator
    monkeypatch.setattr(gen.mimi, "encode", lambda *a: pytest.fail("encoded"))
    rows = gen.model.cfg.backbone.max_seq_len
    long = np.zeros(rows * gen.mimi.samples_per_frame, np.float32)
    check_error(lambda: gen.segment_codes(Segment(0, "hi", audio=long)), f"the context holds {rows}")


def test_long_audio_is_encoded_in_blocks() -> None:
    from ccsm_core.models.mimi_blocks import encode_blocks
    from ccsm_core.speech import load_speech

    mimi = load_speech("demo", "numpy").generator.mimi
    x = (np.random.default_rng(1).standard_normal(mimi.samples_per_frame * 9 + 5) * 0.1).astype(np.float32)
    whole, blocks = mimi.encode(x), encode_blocks(mimi, x, block_frames=4)
    assert whole.shape == blocks.shape and np.array_equal(whole[:, :-1], blocks[:, :-1])


def test_hostile_context_audio_through_the_cli(tmp_path: Path, cli_runner: Any) -> None:
    path = wav_claiming(tmp_path / "a.wav", 1)
    res = cli_runner.invoke(
        cli, ["run", "Hi", "--model", "demo", "--context", "0", "hello", str(path), "-o", str(tmp_path / "o.wav")]
    )
    assert "sample rate 1 Hz" in one_line_error(res)
    assert not (tmp_path / "o.wav").exists()


def test_long_codes_are_decoded_in_blocks_as_at_once() -> None:
    from ccsm_core.models.mimi_blocks import decode_blocks
    from ccsm_core.speech import load_speech

    mimi = load_speech("demo", "numpy").generator.mimi
    codes = np.random.default_rng(2).integers(0, 2048, (mimi.num_codebooks, 11))
    blocks = list(decode_blocks(mimi, codes, block_frames=4))
    assert [len(b) for b in blocks] == [4 * 1920, 4 * 1920, 3 * 1920]
    np.testing.assert_allclose(np.concatenate(blocks), mimi.decode(codes), atol=1e-5)


def test_mimi_streaming_cache_checked_against_the_memory_budget(monkeypatch: Any) -> None:
    from ccsm_core.speech import load_speech

    mimi = load_speech("demo", "numpy").generator.mimi
    monkeypatch.setattr(mimi.decoder_transformer, "context", 1 << 16)
    monkeypatch.setattr(limits, "_budget", 64 << 20)
    check_error(mimi.stream_decoder, "Mimi transformer's streaming cache would need")


def test_model_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.safetensors")
    check_error(lambda: load_csm(tmp_path / "model.safetensors", "numpy"), "FIFO")


def test_damaged_mp3_noise_stays_off_stderr(tmp_path: Path, capfd: Any) -> None:
    """libsndfile's MP3 decoder writes notes on damaged frames to fd 2; the one error is ours."""
    from ccsm_core.audio import read_audio

    rng = np.random.default_rng(0)
    for i in range(5):
        path = tmp_path / f"{i}.wav"
        path.write_bytes(b"\xff\xfb\x90\x64" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
        with pytest.raises(CcsmError):
            read_audio(path)
    assert capfd.readouterr().err == ""


def test_hostile_files_in_a_real_process(tmp_path: Path) -> None:
    """A lying codes header and damaged MP3-like context audio, through the command in a process:
    exit 2 and stderr exactly one ``error: ... (hint: ...)`` line (native notes included)."""
    import subprocess
    import sys

    ccsm = [sys.executable, "-c", "from ccsm_core.cli import main; main()"]
    codes = tmp_path / "c.npy"
    codes.write_bytes(lying_npy("(10000000000, 32)"))
    noise = tmp_path / "a.wav"
    noise.write_bytes(b"\xff\xfb\x90\x64" + bytes(range(256)) * 12)
    for args in (
        ["decode", str(codes), "-o", str(tmp_path / "o.wav"), "--model", "demo"],
        ["run", "Hi", "--model", "demo", "--context", "0", "hello", str(noise), "-o", str(tmp_path / "o.wav")],
    ):
        res = subprocess.run([*ccsm, *args], capture_output=True, cwd=tmp_path, timeout=120)
        err = res.stderr.decode("utf-8", "replace")
        lines = [line for line in err.splitlines() if not line.startswith("note: ")]
        assert res.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith("error: ") and "(hint: " in lines[0], err
        assert not (tmp_path / "o.wav").exists()


def test_hf_config_nulls_mean_the_default() -> None:
    from ccsm_core.loading.hf_folder import config_count, config_real

    assert config_count({"head_dim": None}, "head_dim", "c", 64) == 64
    assert config_real({"rope_theta": None}, "rope_theta", "c", 1e4) == 1e4
    check_error(lambda: config_count({"hidden_size": None}, "hidden_size", "c"), "hidden_size = None")


def test_batch_caches_are_checked_against_the_memory_budget(monkeypatch: Any) -> None:
    from ccsm_core.models.csm_batch import BatchCaches
    from ccsm_core.speech import load_speech

    model = load_speech("demo", "numpy").generator.model
    monkeypatch.setattr(limits, "_budget", 8 << 20)
    check_error(lambda: BatchCaches(model, 4096), "the KV caches of 4096 streams would need")


def test_reading_audio_holds_the_result_and_one_block(tmp_path: Path) -> None:
    """20 s of 384 kHz silence in a small FLAC: read at 24 kHz (1.9 MB) without holding the
    30 MB it decodes to at its own rate."""
    import tracemalloc

    import soundfile as sf

    from ccsm_core.audio import read_audio

    sf.write(str(tmp_path / "a.flac"), np.zeros(384_000 * 20, np.int16), 384_000, subtype="PCM_16")
    tracemalloc.start()
    try:
        wave = read_audio(tmp_path / "a.flac")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wave.shape == (24_000 * 20,) and peak < 16 << 20, peak


def test_context_audio_longer_than_the_context_refused_before_reading(
    tmp_path: Path, cli_runner: Any, monkeypatch: Any
) -> None:
    import soundfile as sf

    from ccsm_core import audio

    monkeypatch.setattr(audio, "_read_resampled", lambda *a: pytest.fail("read"))
    path = tmp_path / "long.wav"
    sf.write(str(path), np.zeros(8000 * 170, np.int16), 8000, subtype="PCM_16")  # 170 s; 2047 rows hold 163.8 s
    res = cli_runner.invoke(
        cli, ["run", "Hi", "--model", "demo", "--context", "0", "hello", str(path), "-o", str(tmp_path / "o.wav")]
    )
    assert "170.0 s of audio is more than the 163.76 s" in one_line_error(res)
