"""JSON configs: a CSM ``config.json`` (load and two frames), Mimi's ``mimi_config.json`` (load,
encode and decode 80 ms) and a transformers text ``config.json`` (load, two greedy tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from .case import Case
from .gguf import run_csm, run_text_model
from .mutate import json_file
from .target import Target


def folder_cases(folder: Path, name: str) -> st.SearchStrategy[Case]:
    """``folder`` with its file ``name`` mutated (a JSON file), the other files linked."""
    links = {p.name: p for p in folder.iterdir() if p.name != name}
    seed = json.loads((folder / name).read_text())
    return json_file(seed).map(lambda b: Case({name: b}, links))


def _run_mimi(folder: Path) -> None:
    from ...loading.mimi import load_mimi

    mimi = load_mimi(folder / "mimi.safetensors", folder / "mimi_config.json")
    codes = mimi.encode(np.zeros(1920, np.float32))
    mimi.decode(codes)


TARGETS = [
    Target(
        "csm-config",
        "files",
        "CSM config.json: load_csm of the folder, 2 frames",
        lambda s: folder_cases(s.csm_dir, "config.json"),
        run_csm,
    ),
    Target(
        "mimi-config",
        "files",
        "mimi_config.json: load_mimi, encode and decode 80 ms",
        lambda s: folder_cases(s.csm_dir, "mimi_config.json"),
        _run_mimi,
    ),
    Target(
        "hf-config",
        "text",
        "transformers config.json: load_text_model of the folder, 2 greedy tokens",
        lambda s: folder_cases(s.hf_text, "config.json"),
        run_text_model,
    ),
]
