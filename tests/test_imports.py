"""The core's imports point down its layers and never form a cycle (function-level imports included).

Layers, bottom to top (a module may import its own layer or lower ones):

0 foundation: errors, limits and schemas, tensor types, the backend contract, hook specs and registrations, user config
1 the plugin manager
2 formats, the NumPy backend, tokenizer implementations
3 models
4 registry lookups: get_backend, samplers, load_tokenizer, watermarking
5 loading (sources, discovery, assembly) and the built-in plugins
6 the API: speech, text generation, the generator, bench, testing helpers
7 the CLI, the fuzzing harness that drives it, and the package's lazy top-level API
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "ccsm_core"
PACKAGE = "ccsm_core"

# module (or package prefix) -> layer; the longest matching prefix wins
LAYERS: dict[str, int] = {
    "errors": 0,
    "files": 0,
    "limits": 0,
    "token_ids": 0,
    "schema": 0,
    "version": 0,
    "tensors": 0,
    "backends.base": 0,
    "hookspecs": 0,
    "specs": 0,
    "registry": 0,
    "plugin_code": 0,
    "plugin_dists": 0,
    "config": 0,
    "context": 0,
    "audio": 0,
    "sentences": 0,
    "timestamps": 0,
    "script": 0,
    "plugins": 1,
    "formats": 2,
    "backends.numpy_backend": 2,
    "tokenizers.gguf_bpe": 2,
    "tokenizers.gguf_spm": 2,
    "tokenizers.gguf_tokenizer": 2,
    "tokenizers.gguf_vocab": 2,
    "tokenizers.hf_json": 2,
    "tokenizers.sentencepiece_model": 2,
    "models": 3,
    "backends": 4,
    "tokenizers": 4,
    "sampling": 4,
    "watermark": 4,
    "loading": 5,
    "builtin": 5,
    "generator": 6,
    "batching": 6,
    "mimi_lanes": 6,
    "slot_batch": 6,
    "speak_many": 6,
    "speech": 6,
    "pipeline": 6,
    "textgen": 6,
    "chat_template": 6,
    "text_batch": 6,
    "bench": 6,
    "bench_ttfa": 6,
    "bench_streams": 6,
    "voices": 6,
    "testing": 6,
    "testing.fuzz": 7,  # drives the CLI itself
    "commands": 7,
    "server": 7,
    "cli": 7,
    "": 7,  # the package itself (its lazy top-level API)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    """The layer of ``module``: its longest listed prefix (the package itself is ``""``)."""
    rel = module[len(PACKAGE) :].lstrip(".")
    listed = [k for k in LAYERS if rel == k or (k and rel.startswith(k + "."))]
    if not listed:
        raise KeyError(f"{module} has no layer: add it (or its package) to LAYERS in tests/test_imports.py")
    return LAYERS[max(listed, key=len)]


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT.parent / rel).with_suffix(".py").is_file() or (ROOT.parent / rel / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every ``ccsm_core`` module ``path`` imports, at any depth of the code."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                out.add(sub if _exists(sub) else target)
    out.discard(me)
    return out


GRAPH = {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = []
    for module in GRAPH:
        try:
            layer(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"modules without a layer in LAYERS: {unplaced}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    up = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not up, f"{module} (layer {layer(module)}) imports higher layers: " + ", ".join(
        f"{t} (layer {layer(t)})" for t in up
    )


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports():
    """The graph includes imports inside functions (a cycle hidden there still counts)."""
    mod = ROOT / "loading" / "csm.py"
    assert "ccsm_core.loading.csm_gguf" in imports_of(mod)  # imported inside _load_gguf
