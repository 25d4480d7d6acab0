"""Text models from hostile files: every broken GGUF value, tokenizer entry or chat template is
one `CcsmError` (on the CLI one ``error: ... (hint: ...)`` line and exit 2), found before
anything is computed, allocated or passed to C; allocations follow the run, not the file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ccsm_core import chat_template, limits
from ccsm_core.cli import cli
from ccsm_core.errors import CcsmError, FormatError, GenerationError
from ccsm_core.formats.gguf_writer import write_gguf
from ccsm_core.loading.text import load_text_model
from ccsm_core.sampling import build_sampler
from ccsm_core.textgen import TextSession, TextSettings, render_chat
from ccsm_core.tokenizers.gguf_tokenizer import tokenizer_from_gguf

from .test_textlm import VOCAB, tiny


def hostile(tmp_path, change: dict, arch: str = "llama", tensors: dict | None = None):
    """A tiny GGUF of ``arch`` with ``change`` applied to its metadata."""
    md, t = tiny(arch)
    md.update(change)
    t.update(tensors or {})
    return write_gguf(tmp_path / "hostile.gguf", md, t, arch)


def one_line_error(e: CcsmError) -> None:
    assert "\n" not in str(e) and e.hint and "\n" not in e.hint


@pytest.mark.parametrize(
    "change, message",
    [
        ({"llama.attention.head_count": 0}, "head_count = 0 is not an integer"),
        ({"llama.attention.head_count": 1 << 31}, "head_count = 2147483648 is not an integer"),
        ({"llama.attention.head_count_kv": 3}, "3 does not divide 4"),
        ({"llama.attention.head_count": 3, "llama.attention.head_count_kv": 3}, "3 does not divide 64"),
        ({"llama.block_count": "two"}, "block_count = 'two' is not an integer"),
        ({"llama.embedding_length": 1 << 40}, "embedding_length = 1099511627776 is not an integer"),
        ({"llama.feed_forward_length": [96, 96]}, "feed_forward_length = \\[96, 96\\] is not an integer"),
        ({"llama.attention.key_length": 15}, "key size 15"),
        ({"llama.rope.dimension_count": 8}, "partial RoPE"),
        ({"llama.context_length": 1 << 40}, "context_length = 1099511627776 is not an integer"),
        ({"llama.attention.layer_norm_rms_epsilon": float("nan")}, "epsilon = nan is not a finite number"),
        ({"llama.attention.layer_norm_rms_epsilon": -1.0}, "epsilon = -1.0 is not a finite number"),
        ({"llama.attention.layer_norm_rms_epsilon": float("inf")}, "epsilon = inf is not a finite number"),
        ({"llama.rope.freq_base": 0.0}, "freq_base = 0.0 is not a finite number"),
        ({"llama.rope.freq_base": "big"}, "freq_base = 'big' is not a finite number"),
        ({"llama.rope.freq_base": 1e-30}, "freq_base = 1.* is not a finite number in \\[1, 1e\\+30\\]"),
        ({"llama.vocab_size": 99}, "vocab_size = 99 but the tokenizer has 12 tokens"),
    ],
)
def test_bad_gguf_metadata_is_one_error(tmp_path, reference_backend, change, message):
    path = hostile(tmp_path, change)
    with pytest.raises(FormatError, match=message) as e:
        load_text_model(path, reference_backend)
    one_line_error(e.value)


def test_layer_shapes_are_checked_in_every_layer(tmp_path, reference_backend):
    """A later layer whose tensor disagrees with the metadata is refused before any is built."""
    rng = np.random.default_rng(0)
    path = hostile(tmp_path, {}, tensors={"blk.1.ffn_up.weight": rng.standard_normal((95, 64)).astype(np.float32)})
    with pytest.raises(FormatError, match=r"blk.1.ffn_up.weight' has shape \[95, 64\], expected \[96, 64\]"):
        load_text_model(path, reference_backend)
    path = hostile(tmp_path, {}, "phi3", {"blk.1.attn_qkv.weight": np.zeros((100, 64), np.float32)})
    with pytest.raises(FormatError, match="attn_qkv.weight' has shape"):
        load_text_model(path, reference_backend)


def test_bad_values_on_the_cli(tmp_path, cli_runner):
    for change in ({"llama.attention.head_count": 0}, {"llama.attention.layer_norm_rms_epsilon": -1.0}):
        path = hostile(tmp_path, change)
        res = cli_runner.invoke(cli, ["generate", "ab", "--model", str(path), "-n", "1", "--backend", "numpy"])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "(hint:" in lines[0], res.output


def test_kv_cache_follows_the_run_not_the_file(tmp_path, reference_backend):
    """context_length 2^31-1 in a 70 KB file: the cache holds what the run uses; a cache the
    budget cannot hold is refused before it is allocated."""
    path = hostile(tmp_path, {"llama.context_length": (1 << 31) - 1})
    loaded = load_text_model(path, reference_backend)
    session = TextSession(loaded)
    assert session.cache.capacity <= 256
    out = session.generate("abcd", TextSettings(temperature=0, max_tokens=300))
    assert session.cache.capacity < 1024 and len(out.ids) <= 300
    limits.set_max_memory(1 << 20)
    try:
        with pytest.raises(FormatError, match="KV cache of 2147483647 positions would need .* memory budget"):
            loaded.model.new_cache()
    finally:
        limits.set_max_memory(None)


def vocab_md(**change):
    md, _ = tiny("llama")
    md = {k: v for k, v in md.items() if k.startswith("tokenizer.")}
    md.update({f"tokenizer.ggml.{k}": v for k, v in change.items()})
    return md


@pytest.mark.parametrize(
    "change, message",
    [
        ({"merges": [1, 2]}, r"merges\[0\] = 1 is not a string"),
        ({"tokens": ["a", 5]}, "no tokenizer.ggml.tokens string list"),
        ({"scores": [float("nan")] * len(VOCAB)}, r"scores\[0\] = nan is not a finite number"),
        ({"scores": [0.0] * 3}, "3 numbers for 12 tokens"),
        ({"token_type": [9] * len(VOCAB)}, r"token_type\[0\] = 9 is not a token type"),
        ({"token_type": ["x"] * len(VOCAB)}, "token_type is not a list of numbers"),
        ({"bos_token_id": "one"}, "bos_token_id = 'one' is not a token id"),
        ({"add_bos_token": "no"}, "add_bos_token = 'no' is not a boolean"),
        ({"pre": ["gpt-2"]}, "unsupported GGUF pre-tokenizer"),
    ],
)
def test_bad_vocabulary_is_one_error(change, message):
    with pytest.raises(FormatError, match=message) as e:
        tokenizer_from_gguf(vocab_md(**change))
    one_line_error(e.value)


def test_special_ids_outside_the_vocabulary_are_ignored():
    """As llama.cpp: an out-of-range id falls back to the default, never indexes past the end."""
    tok = tokenizer_from_gguf(vocab_md(eos_token_id=1 << 30, unknown_token_id=-3))
    assert tok.eos_id == 11 and tok.unk_id is None


@pytest.mark.parametrize("template", [5, ["{{ x }}"], "x" * (chat_template.MAX_TEMPLATE + 1)])
def test_chat_template_must_be_a_text(template):
    tok = tokenizer_from_gguf(vocab_md())
    with pytest.raises(FormatError, match="chat template") as e:
        render_chat({"tokenizer.chat_template": template}, tok, [{"role": "user", "content": "hi"}])
    one_line_error(e.value)


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{ 'x' * 2000000000 }}", "'\\*' repeating"),
        ("{{ (['y' * 1000] * 100000)|join }}", "'\\*' repeating"),
        ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "'~'"),
        ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "'\\+'"),
        ("{{ 'x'|center(2000000000) }}", "center\\(\\) with the argument"),
        ("{{ 'x'.ljust(2000000000) }}", "ljust\\(\\) with the argument"),
        ("{{ '%2000000000d' % 1 }}", "'%' formatting"),
        ("{{ '{:>2000000000}'.format(1) }}", "format\\(\\) with a width"),
        ("{{ 10 ** 100000000 }}", "'\\*\\*' with the exponent"),
        ("{{ ('x' * 100000)|replace('x', 'y' * 1000) }}", "replace\\(\\)"),
        ("{% for i in range(9999) %}{{ 'z' * 1000 }}{% endfor %}", "prompt is longer than"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed too deeply"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% for %}", "failed"),
        ("{{ raise_exception('no system role') }}", "no system role"),
    ],
)
def test_chat_template_bounds(template, message):
    start = time.monotonic()
    with pytest.raises(GenerationError, match=message) as e:
        chat_template.render_template(template, messages=[])
    one_line_error(e.value)
    assert time.monotonic() - start < 5


def test_chat_template_step_and_time_limits(monkeypatch):
    loops = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    monkeypatch.setattr(chat_template, "MAX_STEPS", 20_000)
    with pytest.raises(GenerationError, match="more than 20000 steps"):
        chat_template.render_template(loops)
    monkeypatch.setattr(chat_template, "MAX_STEPS", 1 << 40)
    monkeypatch.setattr(chat_template, "MAX_SECONDS", 0.3)
    start = time.monotonic()
    with pytest.raises(GenerationError, match="more than 0.3 s"):
        chat_template.render_template(loops)
    assert time.monotonic() - start < 3
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__


def test_real_chat_templates_still_render():
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ bos_token }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = tokenizer_from_gguf(vocab_md())
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": " hi "}]
    out = render_chat({"tokenizer.chat_template": template}, tok, messages)
    assert (
        out
        == tok.token_to_piece(tok.bos_id)
        + "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_hostile_chat_template_on_the_cli(tmp_path, cli_runner):
    path = hostile(tmp_path, {"tokenizer.chat_template": "{{ 'x' * 2000000000 }}"})
    res = cli_runner.invoke(cli, ["chat", "--model", str(path), "-n", "1", "--backend", "numpy"], input="hello\n")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "error: the model's chat template exceeds a bound" in res.output and "(hint:" in res.output


def test_nan_logits_name_the_weights():
    chain = build_sampler(temperature=0.8, top_p=0.9)
    rng = np.random.default_rng(0)
    for logits in (np.full(8, np.nan, np.float32), np.array([1.0, np.inf, 0.0], np.float32)):
        with pytest.raises(GenerationError, match="weights") as e:
            chain(np.zeros(0, np.int64), logits, rng)
        assert "top-p" not in str(e.value) + e.value.hint
    assert chain(np.zeros(0, np.int64), np.array([0.0, -np.inf, 3.0], np.float32), rng) in (0, 2)


def test_nan_weights_end_generation_with_the_weights_named(tmp_path, reference_backend):
    md, t = tiny("llama")
    t["output.weight"] = np.full_like(t["output.weight"], np.nan)
    loaded = load_text_model(write_gguf(tmp_path / "nan.gguf", md, t, "llama"), reference_backend)
    with pytest.raises(GenerationError, match="NaN logits: its weights"):
        TextSession(loaded).generate("ab", TextSettings(temperature=0, max_tokens=2))


def test_inspect_undecodable_metadata_under_strict_utf8(tmp_path):
    md, t = tiny("llama")
    md["general.description"] = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    md["general.tags"] = ["ok", b"\xc3(".decode("utf-8", "surrogateescape")]
    path = write_gguf(tmp_path / "odd.gguf", md, t, "llama")
    env = dict(os.environ, LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8:strict")
    for extra in ([], ["--json"]):
        res = subprocess.run(
            [sys.executable, "-c", "from ccsm_core.cli import main; main()", "inspect", str(path), *extra],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr.decode(errors="replace")
        assert b"general.description" in res.stdout


def hf_folder(tmp_path):
    from ccsm_core.formats.gguf_reader import load_gguf
    from ccsm_core.testing.hf_layout import write_hf_folder

    from .test_hf_text import FIXTURES

    src = load_gguf(FIXTURES / "qwen2.gguf")
    return write_hf_folder(tmp_path / "m", dict(src.metadata), {k: t.numpy() for k, t in src.items()})


def test_hostile_transformers_folders(tmp_path, reference_backend, cli_runner):
    import json

    folder = hf_folder(tmp_path)
    files = {n: (folder / n).read_text() for n in ("config.json", "tokenizer.json", "tokenizer_config.json")}
    tok = json.loads(files["tokenizer.json"])
    cases = [
        ("config.json", {"partial_rotary_factor": "half"}, "partial_rotary_factor = 'half' is not a finite"),
        ("tokenizer.json", {"model": ["BPE"]}, "a None model is not supported"),
        ("tokenizer.json", {"pre_tokenizer": "Split"}, "pre-tokenizer None is not recognised"),
        ("tokenizer.json", {"model": {**tok["model"], "merges": [5]}}, "merge 5 is not valid"),
        ("tokenizer.json", {"added_tokens": [{"id": "7", "content": "x"}]}, "token ids are not valid"),
        ("tokenizer_config.json", {"chat_template": 5}, "chat_template is int, not a text"),
        ("tokenizer_config.json", {"chat_template": [{"name": ["default"]}]}, None),
    ]
    for name, change, message in cases:
        (folder / name).write_text(json.dumps(json.loads(files[name]) | change))
        if message is None:
            load_text_model(folder, reference_backend)
        else:
            with pytest.raises(CcsmError, match=message) as e:
                load_text_model(folder, reference_backend)
            one_line_error(e.value)
        (folder / name).write_text(files[name])
    (folder / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    res = cli_runner.invoke(cli, ["generate", "x", "--model", str(folder), "-n", "1", "--backend", "numpy"])
    assert res.exit_code == 2 and "Traceback" not in res.output and "nested" in res.output, res.output


def test_layer_index_of_thousands_of_digits(tmp_path, reference_backend):
    from ccsm_core.formats.safetensors import load_safetensors, save_safetensors

    folder = hf_folder(tmp_path)
    src = load_safetensors(folder / "model.safetensors")
    tensors = {k: t.numpy() for k, t in src.tensors.items()}
    tensors["model.layers." + "9" * 5000 + ".mlp.up_proj.weight"] = np.zeros((1, 1), np.float32)
    save_safetensors(folder / "model.safetensors", tensors)
    with pytest.raises(FormatError, match="is not understood"):
        load_text_model(folder, reference_backend)


def gguf_bytes(tensors: list[tuple[str, list[int], int]]) -> bytes:
    """A GGUF v3 file with no metadata and ``tensors`` as (name, ne, GGML type) at offset 0."""
    import struct

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0)
    for name, ne, kind in tensors:
        raw = name.encode()
        out += struct.pack("<Q", len(raw)) + raw + struct.pack("<I", len(ne))
        out += b"".join(struct.pack("<Q", d) for d in ne) + struct.pack("<IQ", kind, 0)
    return out + b"\0" * (-len(out) % 32)


@pytest.mark.parametrize("ne", [[0, 1 << 62], [1 << 62, 0], [1 << 30, 1 << 30, 0, 1 << 30]])
def test_empty_tensors_of_impossible_shape(tmp_path, ne):
    from ccsm_core.formats.gguf_reader import load_gguf

    path = tmp_path / "empty.gguf"
    path.write_bytes(gguf_bytes([("t", ne, 0)]))
    with pytest.raises(FormatError, match="impossible shape"):
        load_gguf(path)
    path.write_bytes(gguf_bytes([("t", [0, 1 << 20], 0)]))
    assert load_gguf(path).tensors["t"].shape == (1 << 20, 0)


def test_rope_factors_keep_frequencies_finite(tmp_path, reference_backend):
    """Llama 3's per-pair divisors: a tiny or infinite one would make a frequency infinite."""
    for bad in (1e-30, np.inf, np.nan):
        factors = np.ones(8, np.float32)
        factors[3] = bad
        path = hostile(tmp_path, {}, tensors={"rope_freqs.weight": factors})
        with pytest.raises(FormatError, match="holds 8 RoPE factors, expected 8 in"):
            load_text_model(path, reference_backend)


def test_tokenizer_json_the_library_cannot_run(tmp_path):
    import json

    from ccsm_core.tokenizers.hf_json import HFJsonTokenizer

    model = {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"version": "1.0", "model": model}))
    with pytest.raises(FormatError, match="cannot encode .*Unk token"):
        HFJsonTokenizer(path).encode("b")
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match="nested"):
        HFJsonTokenizer(path)


def test_ids_outside_the_vocabulary_and_fifos(tmp_path):
    from ccsm_core.errors import UsageError
    from ccsm_core.tokenizers import load_tokenizer

    tok = load_tokenizer(write_tokenizer_json(tmp_path))
    for ids in ([1 << 40], [-1]):
        with pytest.raises(UsageError, match="outside the vocabulary"):
            tok.decode(ids)
    fifo = tmp_path / "tokenizer.model"
    os.mkfifo(fifo)
    from ccsm_core.tokenizers.sentencepiece_model import SentencePieceTokenizer

    with pytest.raises(CcsmError, match="is a FIFO"):
        SentencePieceTokenizer(fifo)


def write_tokenizer_json(tmp_path):
    import json

    model = {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"version": "1.0", "model": model}))
    return path


def test_prompt_ids_outside_the_vocabulary(tmp_path, reference_backend):
    from ccsm_core.errors import UsageError

    loaded = load_text_model(hostile(tmp_path, {}), reference_backend)
    for ids in ([1, 2, 1 << 40], [-1, 2], [len(VOCAB)], [1 << 70]):
        with pytest.raises(UsageError, match="outside the vocabulary|must be integers in 0..11") as e:
            TextSession(loaded).generate(ids, TextSettings(temperature=0, max_tokens=1))
        one_line_error(e.value)


def test_empty_embedding_claiming_a_huge_vocabulary(tmp_path, reference_backend):
    """A zero-byte embedding of 2^30 rows must not make the tokenizer list 2^30 tokens."""
    import json

    from ccsm_core.formats.safetensors import load_safetensors, save_safetensors

    folder = hf_folder(tmp_path)
    src = load_safetensors(folder / "model.safetensors")
    tensors = {k: t.numpy() for k, t in src.tensors.items()}
    tensors["model.embed_tokens.weight"] = np.zeros((1 << 30, 0), np.float32)
    save_safetensors(folder / "model.safetensors", tensors)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"vocab_size": 1 << 30}))
    with pytest.raises(FormatError, match="vocab_size = 1073741824 is not an integer in 1..16777216"):
        load_text_model(folder, reference_backend)
