"""`ccsm bench`: it runs and reports (speed itself is never asserted)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from ccsm_core.bench import LLAMA_CPP, run_llama_cpp_one
from ccsm_core.cli import cli


def test_speech_bench_json(cli_runner):
    res = cli_runner.invoke(
        cli,
        ["bench", "--shape", "demo", "--backend", "numpy", "--type", "f32", "--frames", "2", "--warmup", "0", "--json"],
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert row["backend"] == "numpy" and row["type"] == "f32" and row["frame_s_median"] > 0
    assert row["rtf"] == pytest.approx(row["frame_s_median"] / 0.08)
    for stage in ("backbone_s_median", "decoder_s_median", "mimi_s_median"):
        assert 0 < row[stage] <= row["frame_s_median"]


def test_ttfa_bench_reuses_the_voice_rows(cli_runner):
    args = ["bench", "--ttfa", "--shape", "demo", "--backend", "numpy", "--type", "f32", "--frames", "1", "--json"]
    res = cli_runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    for case in ("none", "voice", "cached", "restored"):
        assert row[f"ttfa_{case}_s"] > 0
    assert row["voice_rows"] > 125  # the voice's text rows, 125 frames and the end row
    assert row["reused_rows_none"] == row["reused_rows_voice"] == 0
    assert row["reused_rows_cached"] == row["reused_rows_restored"] == row["voice_rows"]
    assert row["cached_vs_none"] == pytest.approx(row["ttfa_cached_s"] / row["ttfa_none_s"])


def test_text_bench_and_missing_llama_cpp(cli_runner):
    res = cli_runner.invoke(
        cli,
        [
            "bench",
            "--model",
            "smollm2",
            "--backend",
            "numpy",
            "--backend",
            LLAMA_CPP,
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {r["backend"]: r for r in json.loads(res.output)}
    assert rows["numpy"]["pp_tok_s"] > 0 and rows["numpy"]["tg_tok_s"] > 0
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        assert rows[LLAMA_CPP]["error"].startswith("llama.cpp is not installed")


def test_bad_type_is_a_usage_error(cli_runner):
    res = cli_runner.invoke(cli, ["bench", "--type", "q3_x"])
    assert res.exit_code == 2 and "unknown --type 'q3_x'" in res.output


def test_llama_cpp_row_measures_greedy_decoding(monkeypatch):
    """The reference row feeds the prompt in one batch, then the argmax token by token."""
    fed: list[list[int]] = []

    class FakeLlama:
        def __init__(self, model_path, n_ctx, n_batch, n_threads, n_threads_batch, flash_attn, verbose):
            assert n_batch >= 8 and n_threads == n_threads_batch == 2 and flash_attn
            self.logits = np.zeros(50, np.float32)
            self.ctx = "ctx"
            self.n_tokens = 0

        def n_vocab(self):
            return 50

        def reset(self):
            self.n_tokens = 0

        def eval(self, tokens):
            fed.append(list(tokens))
            self.n_tokens += len(tokens)
            self.logits[:] = 0
            self.logits[(self.n_tokens * 7) % 50] = 1.0

    made: list[FakeLlama] = []

    def get_logits(ctx):
        assert ctx == "ctx"
        return np.ctypeslib.as_ctypes(made[-1].logits)

    def make(**kw):
        made.append(FakeLlama(**kw))
        return made[-1]

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=make, llama_get_logits=get_logits))
    row = run_llama_cpp_one("m.gguf", 2, 8, 3, 1)
    assert row["backend"] == LLAMA_CPP and row["pp_tok_s"] > 0 and row["tg_tok_s"] > 0
    assert [len(f) for f in fed] == [8, 1, 1, 1] * 2
    assert fed[1] == [(8 * 7) % 50] and fed[2] == [(9 * 7) % 50]


def test_background_load_runs_busy_processes_and_stops_them():
    from ccsm_core.bench import background_load

    with background_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.returncode is not None for p in procs)
    with background_load(0) as none:
        assert none == []


def test_default_backends_skip_negative_priority(plugin_manager):
    from ccsm_core import hookimpl
    from ccsm_core.commands.models import _bench_backends

    mod = types.ModuleType("slowpoke")
    mod.register_backends = hookimpl(lambda register: register("slow", lambda **o: None, priority=-1))
    plugin_manager(plugins=[mod])
    assert "slow" not in _bench_backends(()) and "numpy" in _bench_backends(())
    assert {"slow", "numpy"} <= set(_bench_backends(("all",)))
    assert _bench_backends(("slow", LLAMA_CPP)) == ["slow", LLAMA_CPP]


def test_threads_option_measures_each_count(cli_runner):
    res = cli_runner.invoke(
        cli,
        [
            "bench",
            "--shape",
            "demo",
            "--backend",
            "numpy",
            "--type",
            "f32",
            "--frames",
            "1",
            "--warmup",
            "0",
            "--threads",
            "auto",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert [r["threads"] for r in json.loads(res.output)] == [None, 1]
    bad = cli_runner.invoke(cli, ["bench", "--threads", "0"])
    assert bad.exit_code == 2 and "neither 'auto' nor a count" in bad.output


def test_llama_stack_gguf_has_llama_cpp_names_and_shapes(tmp_path):
    from ccsm_core.bench import write_llama_stack
    from ccsm_core.formats.gguf_reader import read_header
    from ccsm_core.models.config import LlamaConfig

    cfg = LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128)
    path = write_llama_stack(tmp_path / "s.gguf", cfg, 70, "Q8_0", np.random.default_rng(0))
    head = read_header(path)
    shapes = {t.name: (t.shape, t.type_name) for t in head.tensors}
    assert shapes["token_embd.weight"] == ((70, 64), "Q8_0") and shapes["output.weight"] == ((70, 64), "Q8_0")
    assert shapes["blk.1.attn_k.weight"] == ((32, 64), "Q8_0") and shapes["blk.0.ffn_down.weight"] == (
        (64, 128),
        "Q8_0",
    )
    assert shapes["blk.0.attn_norm.weight"] == ((64,), "F32") and "output_norm.weight" in shapes
    assert len(shapes) == 2 * 9 + 3
    md = head.metadata
    assert md["general.architecture"] == "llama" and md["llama.block_count"] == 2
    assert md["llama.attention.head_count_kv"] == 2 and md["llama.rope.dimension_count"] == 16
    assert md["llama.vocab_size"] == 70 and md["tokenizer.ggml.model"] == "none"


def test_llama_cpp_speech_row_times_one_backbone_and_31_decoder_tokens(monkeypatch):
    """Per frame: one backbone token at the next position after the prompt, then the decoder's
    cache cleared and 31 tokens at positions 0..30."""
    from ccsm_core.bench import run_llama_cpp_speech_one

    calls: list[tuple] = []

    class Batch:
        def __init__(self, n):
            self.token, self.pos, self.n_seq_id, self.logits = [0] * n, [0] * n, [0] * n, [0] * n
            self.seq_id = [[0] for _ in range(n)]
            self.n_tokens = 0

    class Params:
        pass

    def load(path, params):
        calls.append(("load", path.decode().rsplit("/", 1)[-1], params.use_extra_bufts))
        return path.decode().rsplit("/", 1)[-1].split(".")[0]

    def init(model, params):
        assert params.n_threads == params.n_threads_batch == 3 and params.flash_attn_type == "on"
        return model

    def decode(ctx, batch):
        calls.append(("decode", ctx, batch.token[: batch.n_tokens], batch.pos[: batch.n_tokens]))
        return 0

    lc = types.SimpleNamespace(
        llama_log_callback=lambda f: f,
        llama_log_set=lambda cb, user: None,
        llama_backend_init=lambda: None,
        llama_model_default_params=Params,
        llama_context_default_params=Params,
        llama_model_load_from_file=load,
        llama_init_from_model=init,
        LLAMA_FLASH_ATTN_TYPE_ENABLED="on",
        llama_batch_init=lambda n, e, s: Batch(n),
        llama_batch_free=lambda b: None,
        llama_decode=decode,
        llama_get_logits_ith=lambda ctx, i: None,
        llama_get_memory=lambda ctx: ctx,
        llama_memory_clear=lambda mem, data: calls.append(("clear", mem)),
        llama_free=lambda ctx: None,
        llama_model_free=lambda m: None,
        llama_print_system_info=lambda: b"CPU : AVX2 = 1 | ",
    )
    monkeypatch.setitem(sys.modules, "llama_cpp", lc)
    monkeypatch.setattr("ccsm_core.bench.write_llama_stack", lambda path, cfg, vocab, dtype, rng: path)
    row = run_llama_cpp_speech_one("q4_0", frames=2, warmup=1, threads=3)
    assert calls[:2] == [("load", "backbone.gguf", True), ("load", "decoder.gguf", True)]
    assert calls[2] == ("decode", "backbone", list(range(16)), list(range(16)))
    frame = calls[3 : 3 + 33]
    assert frame[0][:2] == ("decode", "backbone") and frame[0][3] == [16] and frame[1] == ("clear", "decoder")
    assert [c[3] for c in frame[2:]] == [[i] for i in range(31)]
    assert calls[3 + 33][3] == [17] and len(calls) == 3 + 3 * 33
    assert row["backend"] == LLAMA_CPP and 0 < row["backbone_s_median"] <= row["frame_s_median"]
    assert "mimi_s_median" not in row and row["extra_bufts"] is True


def test_streams_bench_reports_each_count_against_one_stream(cli_runner):
    args = ["bench", "--streams", "3", "--shape", "demo", "--backend", "numpy", "--type", "f32"]
    res = cli_runner.invoke(cli, [*args, "--frames", "2", "--warmup", "1", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["streams"] == 3 and row["batched"] is True
    assert row["frames_per_s"] == pytest.approx(3 / row["step_s_median"])
    assert row["speedup"] > 0 and row["per_stream_vs_one"] > 0
    res = cli_runner.invoke(cli, ["bench", "--streams", "2", "--ttfa"])
    assert res.exit_code == 2 and "--streams measures batched generation" in res.output


def test_text_streams_bench_reports_each_count_against_one_sequence(cli_runner, tmp_path):
    from ccsm_core.testing.text_models import write_tiny_text

    model = write_tiny_text(tmp_path / "t.gguf", "llama", context=256)
    args = ["bench", "--streams", "3", "--model", str(model), "--backend", "numpy", "--prompt-tokens", "5"]
    res = cli_runner.invoke(cli, [*args, "--gen-tokens", "2", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["streams"] == 3 and row["backend"] == "numpy" and "error" not in row
    assert row["tokens_per_s"] == pytest.approx(3 / row["step_s_median"])
    assert row["speedup"] > 0 and "vs_llama_cpp" not in row  # llama.cpp was not asked for
