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
    res = cli_runner.invoke(cli, ["bench", "--shape", "demo", "--backend", "numpy", "--type", "f32", "--frames", "2",
                                  "--warmup", "0", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert row["backend"] == "numpy" and row["type"] == "f32" and row["frame_s_median"] > 0
    assert row["rtf"] == pytest.approx(row["frame_s_median"] / 0.08)
    for stage in ("backbone_s_median", "decoder_s_median", "mimi_s_median"):
        assert 0 < row[stage] <= row["frame_s_median"]


def test_text_bench_and_missing_llama_cpp(cli_runner):
    res = cli_runner.invoke(cli, ["bench", "--model", "smollm2", "--backend", "numpy", "--backend", LLAMA_CPP,
                                  "--prompt-tokens", "8", "--gen-tokens", "2", "--json"])
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
