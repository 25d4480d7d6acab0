"""The conversion cache: hits, misses on other options or other bytes, damaged entries rebuilt,
atomic writes, and ``ccsm mlx convert`` filling it for ``ccsm run``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from ccsm_mlx.backend import MlxBackend
from ccsm_mlx.cache import ARRAYS, MANIFEST, WeightCache, tensor_key
from ccsm_mlx.weights import Precision, QWeight

from ccsm_core.loading.csm import load_csm

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"


def load(cache_dir: Path, **options) -> tuple[MlxBackend, np.ndarray]:
    be = MlxBackend(cache_dir=str(cache_dir), **options)
    model = load_csm(FIXTURE, be).model
    return be, be.to_numpy(model.codebook0_head)


def test_second_load_hits_with_the_same_values(tmp_path):
    first, w1 = load(tmp_path, quantize=4)
    st = first.cache.stats
    assert st["misses"] > 40 and st["written"] == st["misses"] and st["hits"] == 0
    second, w2 = load(tmp_path, quantize=4)
    assert second.cache.stats["hits"] == st["written"] and second.cache.stats["misses"] == 0
    np.testing.assert_array_equal(w1, w2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_other_options_miss(tmp_path):
    first, _ = load(tmp_path, quantize=4)
    other, _ = load(tmp_path, quantize=8)
    assert other.cache.stats["hits"] == 0 and other.cache.stats["written"] == first.cache.stats["written"]
    group, _ = load(tmp_path, quantize=4, group_size=32)
    assert group.cache.stats["hits"] < first.cache.stats["written"]  # only tensors that used 32 anyway
    assert WeightCache(tmp_path).size()[0] >= 2 * first.cache.stats["written"]


def test_plain_casts_skip_the_cache_unless_asked(tmp_path):
    auto, _ = load(tmp_path, dtype="bf16")
    assert auto.cache.stats == {"hits": 0, "misses": 0, "written": 0, "rebuilt": 0, "bytes_written": 0}
    always, _ = load(tmp_path, dtype="bf16", cache="always")
    assert always.cache.stats["written"] > 40
    off = MlxBackend(cache="off", quantize=4)
    assert off.cache is None


def test_key_follows_bytes_and_options():
    a = np.arange(64, dtype=np.float32).reshape(2, 32)
    b = a.copy()
    b[1, 7] += 1
    p4, p8 = Precision.parse(quantize=4), Precision.parse(quantize=8)
    assert tensor_key(a, p4) == tensor_key(a.copy(), p4)
    assert len({tensor_key(a, p4), tensor_key(b, p4), tensor_key(a, p8), tensor_key(a.reshape(4, 16), p4)}) == 4


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest", "no_arrays", "other_key"])
def test_damaged_entry_is_rebuilt(tmp_path, damage):
    first, want = load(tmp_path, quantize=4)
    entries = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    victim = max(entries, key=lambda p: (p / ARRAYS).stat().st_size)
    arrays = victim / ARRAYS
    if damage == "flip":
        data = bytearray(arrays.read_bytes())
        data[-5] ^= 0xFF
        arrays.write_bytes(bytes(data))
    elif damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[:100])
    elif damage == "manifest":
        (victim / MANIFEST).write_text("{not json")
    elif damage == "no_arrays":
        arrays.unlink()
    else:
        man = json.loads((victim / MANIFEST).read_text())
        man["key"] = "0" * 40
        (victim / MANIFEST).write_text(json.dumps(man))
    again, got = load(tmp_path, quantize=4)
    st = again.cache.stats
    assert st["rebuilt"] == 1 and st["written"] == 1 and st["hits"] == first.cache.stats["written"] - 1
    np.testing.assert_array_equal(got, want)
    third, _ = load(tmp_path, quantize=4)
    assert third.cache.stats["rebuilt"] == 0 and third.cache.stats["misses"] == 0


def test_put_is_atomic_and_first_writer_wins(tmp_path):
    cache = WeightCache(tmp_path)
    import mlx.core as mx

    a = mx.array(np.ones((2, 64), np.float32))
    q = QWeight(*mx.quantize(a, 64, 8), 64, 8, (2, 64))
    cache.put("k" * 40, q, {})
    stamp = os.stat(tmp_path / ("k" * 40) / MANIFEST).st_mtime_ns
    cache.put("k" * 40, q, {})  # a second writer of the same entry: dropped
    assert os.stat(tmp_path / ("k" * 40) / MANIFEST).st_mtime_ns == stamp
    assert cache.stats["written"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["k" * 40]
    got = cache.get("k" * 40)
    np.testing.assert_array_equal(np.array(got.dense()), np.ones((2, 64), np.float32))


def test_convert_command_fills_the_cache_for_run(tmp_path, cli_runner):
    from ccsm_core.cli import cli

    res = cli_runner.invoke(
        cli, ["mlx", "convert", str(FIXTURE), "--quantize", "4", "--cache-dir", str(tmp_path), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert "0 found" in res.output and "--backend-option quantize=4" in res.output
    n, size = WeightCache(tmp_path).size()
    assert n > 40 and size > 0
    res = cli_runner.invoke(
        cli, ["mlx", "convert", str(FIXTURE), "--quantize", "4", "--cache-dir", str(tmp_path), "--no-progress"]
    )
    assert f"{n} found, 0 written" in res.output
    out = tmp_path / "hi.wav"
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hello from CSM.",
            "--model",
            str(FIXTURE),
            "--backend",
            "mlx",
            "--backend-option",
            "quantize=4",
            "--backend-option",
            f"cache_dir={tmp_path}",
            "--max-audio-ms",
            "240",
            "--seed",
            "1",
            "--no-watermark",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000
    res = cli_runner.invoke(cli, ["mlx", "cache", "--cache-dir", str(tmp_path)])
    assert f"{n} entries" in res.output
    res = cli_runner.invoke(cli, ["mlx", "cache", "--cache-dir", str(tmp_path), "--clear"])
    assert WeightCache(tmp_path).size() == (0, 0)


def test_bad_backend_option_from_the_cli(cli_runner):
    from ccsm_core.cli import cli

    res = cli_runner.invoke(
        cli, ["run", "Hi", "--model", str(FIXTURE), "--backend", "mlx", "--backend-option", "dtype=fp8", "-o", "x.wav"]
    )
    assert res.exit_code == 2 and "dtype 'fp8'" in res.output
