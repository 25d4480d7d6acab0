"""Export a tiny random Llama to ONNX with the real exporters and record transformers' logits, as
plugins/ccsm_onnx/tests/fixtures/ holds them.

Runs in a scratch virtual environment of its own, never ccsm's (torch is no dependency of ccsm):

    python -m venv /tmp/onnx-export-venv
    /tmp/onnx-export-venv/bin/pip install torch "transformers>=4.57,<4.58" onnx onnxscript optimum-onnx onnxruntime
    /tmp/onnx-export-venv/bin/python scripts/record_onnx_exports.py plugins/ccsm_onnx/tests/fixtures

(optimum-onnx 0.1.0 needs transformers below 4.58; torch from PyPI brings its CUDA libraries, a
few GB, though only the CPU runs here.)

The model: ``LlamaConfig`` with hidden size 64, 2 layers, 4 heads, 2 KV heads, an untied head and a
byte-level BPE tokenizer of a few hundred tokens trained on a sentence or two, random weights
(seed 0). Each export sits in a folder of its own with ``config.json`` and the tokenizer files
beside ``model.onnx`` (as optimum writes the folder), and ``reference.json``: the token ids,
transformers' float32 logits at every position, which exporter wrote it with which options, and
the versions of torch, transformers, onnx and optimum. Exports:

- ``torch-script``: ``torch.onnx.export(dynamo=False)``, the TorchScript exporter, constant
  folding on (the default), with the mask functions optimum registers (transformers' own use
  ``vmap``, which TorchScript cannot trace);
- ``torch-script-external``: the same without constant folding, the weights moved to
  ``model.onnx_data`` by ``onnx.save_model(save_as_external_data=True)`` as the exporter does
  past 2 GiB;
- ``torch-dynamo``: ``torch.onnx.export(dynamo=True)``, saved with ``external_data=True``
  (``model.onnx.data``);
- ``optimum``: ``optimum.exporters.onnx.main_export`` with task ``text-generation``;
- ``optimum-past``: the same with ``text-generation-with-past``, weights moved to
  ``model.onnx_data``.

- ``optimum-ort-fused``: the ``optimum`` export through onnxruntime's optimizer (fused RMSNorms);
- ``optimum-ort-quantized``: the same through onnxruntime's dynamic int8 quantization (which ccsm
  refuses; its logits are the float model's);
- ``torch-script-tied``, ``torch-dynamo-tied``: a second model whose head shares the embedding
  and whose norms are all ones as initialised: the exporters store the identical norms once
  (TorchScript reads the copy through ``Identity`` nodes, dynamo from every norm) and the dynamo
  exporter names the embedding ``lm_head.weight``.

An exporter that is not installed or fails is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

IDS = [1, 45, 80, 120, 7, 200, 33, 257, 64, 2]
VOCAB = 272
TEXT = (
    "The quick brown fox jumps over the lazy dog. A tiny Llama speaks in bytes and merges; "
    "it knows numbers 0 1 2 3 4 5 6 7 8 9 and says hello, world! Weights are random, "
    "so every sentence it writes is noise, but the exporters do not mind. "
) * 4
FOLDER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
FOLDER_FILES += ("special_tokens_map.json",)


def versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "onnx", "onnxscript", "optimum", "optimum-onnx", "onnxruntime", "tokenizers"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer (GPT-2's pre-tokenizer) saved as transformers saves one."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[1])
    fast.save_pretrained(folder)


def transformers_folder(folder: Path, tied: bool = False) -> LlamaForCausalLM:
    """The random model saved as a transformers folder; ``tied``: the head shares the embedding
    and the norms keep their initial all-ones weights (which the exporters store once)."""
    torch.manual_seed(1 if tied else 0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # spread the norm weights away from 1 so a misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name and not tied:
                p.copy_(1 + 0.5 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer(folder)
    return model


class LogitsOnly(torch.nn.Module):
    """input_ids -> logits, no cache (what the torch.onnx exports trace); the all-ones attention
    mask keeps transformers from looking for packed sequences (``aten::diff``, which the
    TorchScript exporter cannot write)."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


@contextmanager
def masks_without_vmap() -> Iterator[None]:
    """transformers' causal masks built without ``vmap``, which TorchScript cannot trace (the
    replacements optimum's exporter registers; the TorchScript exporter fails without them)."""
    from optimum.exporters.onnx.model_patcher import eager_mask_without_vmap, sdpa_mask_without_vmap
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    saved = {k: ALL_MASK_ATTENTION_FUNCTIONS[k] for k in ("sdpa", "eager")}
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa", sdpa_mask_without_vmap)
    ALL_MASK_ATTENTION_FUNCTIONS.register("eager", eager_mask_without_vmap)
    try:
        yield
    finally:
        for k, f in saved.items():
            ALL_MASK_ATTENTION_FUNCTIONS.register(k, f)


def torch_script(model: LlamaForCausalLM, out: Path, folding: bool) -> dict:
    ids = torch.tensor([IDS])
    with masks_without_vmap():
        torch.onnx.export(
            LogitsOnly(model),
            (ids,),
            str(out / "model.onnx"),
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
            opset_version=17,
            do_constant_folding=folding,
            dynamo=False,
        )
    how = {"exporter": "torch.onnx.export", "dynamo": False, "do_constant_folding": folding, "opset": 17}
    return how | {"masks": "optimum's sdpa/eager masks without vmap"}


def torch_dynamo(model: LlamaForCausalLM, out: Path) -> dict:
    ids = torch.tensor([IDS])
    program = torch.onnx.export(
        LogitsOnly(model),
        (ids,),
        input_names=["input_ids"],
        output_names=["logits"],
        dynamo=True,
        optimize=True,
    )
    program.save(str(out / "model.onnx"), external_data=True)
    return {"exporter": "torch.onnx.export", "dynamo": True, "optimize": True, "external_data": True}


def optimum(folder: Path, out: Path, task: str) -> dict:
    from optimum.exporters.onnx import main_export

    main_export(str(folder), output=str(out), task=task, device="cpu", no_post_process=False)
    return {"exporter": "optimum.exporters.onnx.main_export", "task": task}


def onnxruntime_pass(folder: Path, out: Path, kind: str) -> dict:
    """optimum's export, then onnxruntime's optimizer (``fused``: its RMSNorm fusions,
    ``SimplifiedLayerNormalization`` and ``SkipSimplifiedLayerNormalization``) or its dynamic
    int8 quantization (``quantized``: ``MatMulInteger`` over int8 weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        how = optimum(folder, Path(tmp), "text-generation")
        src, dst = str(Path(tmp) / "model.onnx"), str(out / "model.onnx")
        if kind == "fused":
            from onnxruntime.transformers.optimizer import optimize_model

            optimize_model(src, model_type="gpt2", num_heads=4, hidden_size=64, opt_level=1).save_model_to_file(dst)
            return how | {"then": "onnxruntime.transformers.optimizer.optimize_model(model_type='gpt2', opt_level=1)"}
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return how | {"then": "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)"}


def move_to_external(path: Path) -> None:
    """The weights of ``path`` into ``model.onnx_data`` (tensors of 1 KiB and over), as the
    exporters save a model past protobuf's 2 GiB."""
    m = onnx.load(str(path))
    for stale in path.parent.glob("*.onnx_data"):
        stale.unlink()
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data")
    (path.parent / "model.onnx_data").chmod(0o644)


def record(root: Path, name: str, folder: Path, model: LlamaForCausalLM, run: Callable[[Path], dict]) -> None:
    out = root / name
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            how = run(work)
        except Exception:
            print(f"{name}: failed\n{traceback.format_exc(limit=4)}", file=sys.stderr)
            return
        out.mkdir(parents=True)
        onnx_files = sorted(work.glob("*.onnx"))
        if len(onnx_files) != 1:
            print(f"{name}: {len(onnx_files)} .onnx files written: {onnx_files}", file=sys.stderr)
        for f in work.iterdir():  # the graph and its external data (optimum: model.onnx_data)
            if f.name.startswith("model.onnx"):
                shutil.copyfile(f, out / f.name)
        if how.pop("move_to_external", False):
            move_to_external(out / "model.onnx")
            how["external_data"] = "onnx.save_model(save_as_external_data=True, size_threshold=1024)"
    for f in FOLDER_FILES:
        if (folder / f).exists():
            shutil.copy(folder / f, out / f)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([IDS]), use_cache=False).logits[0].float()
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    ref = {
        "ids": IDS,
        "logits": [[round(float(x), 6) for x in row] for row in logits],
        "export": how,
        "initializers": len(graph.initializer),
        "ops": sorted({n.op_type for n in graph.node}),
        "versions": versions(),
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=None, separators=(",", ":")) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name}: {size // 1024} KiB, {len(graph.initializer)} initializers, ops {ref['ops']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the fixtures folder")
    ap.add_argument("cases", nargs="*", help="export names (default: all)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, tied_folder = Path(tmp) / "tiny-llama", Path(tmp) / "tiny-llama-tied"
        model, tied = transformers_folder(folder), transformers_folder(tied_folder, tied=True)
        cases: dict[str, Callable[[Path], dict]] = {
            "torch-script": lambda out: torch_script(model, out, folding=True),
            "torch-script-external": lambda out: torch_script(model, out, folding=False) | {"move_to_external": True},
            "torch-dynamo": lambda out: torch_dynamo(model, out),
            "optimum": lambda out: optimum(folder, out, "text-generation"),
            "optimum-past": lambda out: optimum(folder, out, "text-generation-with-past") | {"move_to_external": True},
            "optimum-ort-fused": lambda out: onnxruntime_pass(folder, out, "fused"),
            "optimum-ort-quantized": lambda out: onnxruntime_pass(folder, out, "quantized"),
            "torch-script-tied": lambda out: torch_script(tied, out, folding=True),
            "torch-dynamo-tied": lambda out: torch_dynamo(tied, out),
        }
        for name, run in cases.items():
            if not args.cases or name in args.cases:
                which = (tied_folder, tied) if name.endswith("-tied") else (folder, model)
                record(args.out, name, *which, run)


if __name__ == "__main__":
    main()
