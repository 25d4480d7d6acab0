"""The ``ccsm`` command line. Heavy modules are imported inside commands, never at start-up."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from . import __version__
from .errors import CcsmError, UsageError


class CcsmGroup(click.Group):
    """Adds plugin commands on first lookup and turns `CcsmError` into one line + exit 2."""

    _plugins_added = False

    def _add_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugins_added or os.environ.get("CCSM_NO_PLUGIN_COMMANDS"):
            return
        self._plugins_added = True
        from .plugins import get_plugin_manager

        get_plugin_manager().add_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._add_plugin_commands(ctx)
            cmd = super().get_command(ctx, name)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CcsmError as e:
            if os.environ.get("CCSM_DEBUG"):
                raise
            click.echo(f"error: {e.one_line()}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _load_defaults(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .config import load_config

    try:
        ctx.default_map = load_config(value)
    except CcsmError as e:
        raise click.BadParameter(e.one_line(), ctx=ctx, param=param) from None
    return value


@click.group(cls=CcsmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ccsm")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_defaults, help="TOML file of option defaults (else $CCSM_CONFIG or ~/.config/ccsm/config.toml).")
def cli() -> None:
    """ccsm: Sesame's CSM speech model and Llama-family GGUF models, locally.

    Backends, formats, tokenizers, samplers and watermarks are plugins: see `ccsm plugins`.
    """


def _parse_kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _parse_bias(items: tuple[str, ...]) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in _parse_kv(items, "--logit-bias").items():
        try:
            bias[int(key)] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--logit-bias {key}={value} needs an integer id and a number") from None
    return bias


@cli.command()
@click.argument("text")
@click.option("--model", "-m", envvar="CCSM_MODEL", help="CSM checkpoint folder (config.json + model.safetensors). [env: CCSM_MODEL]")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False), help="tokenizer.json or .model, if not in the model folder.")
@click.option("--speaker", "-s", type=click.IntRange(min=0), default=0, show_default=True, help="Speaker id of the new turn.")
@click.option("--max-audio-ms", type=click.FloatRange(min=80), default=90_000, show_default=True, help="Longest audio to generate.")
@click.option("--temperature", "-t", type=click.FloatRange(min=0), default=0.9, show_default=True, help="0 = greedy.")
@click.option("--topk", "--top-k", type=click.IntRange(min=1), default=50, show_default=True, help="Keep the k most likely codes.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="Nucleus sampling mass (0, 1].")
@click.option("--min-p", type=click.FloatRange(0, 1), default=None, help="Drop codes below p x the top probability.")
@click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--frequency-penalty", type=click.FloatRange(-2, 2), default=None)
@click.option("--presence-penalty", type=click.FloatRange(-2, 2), default=None)
@click.option("--logit-bias", multiple=True, metavar="ID=BIAS", help="Add BIAS to code ID (repeatable; -inf bans).")
@click.option("--min-frames", type=click.IntRange(min=0), default=0, show_default=True, help="No end of audio before this many frames.")
@click.option("--guard-special-codes", is_flag=True, help="Never sample audio ids 2048-2050 (the original may).")
@click.option("--sampler", default=None, help="Final sampler by name (default: categorical, or greedy at temperature 0).")
@click.option("--seed", type=int, default=None, help="Random seed for reproducible output.")
@click.option("--backend", "-b", envvar="CCSM_BACKEND", default=None, help="Compute backend (see `ccsm backends`). [env: CCSM_BACKEND]")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for backends that use them.")
@click.option("--backend-option", multiple=True, metavar="KEY=VALUE", help="Option passed to the backend.")
@click.option("--codes-out", type=click.Path(dir_okay=False, writable=True), default=None, help="Save the frames as an int .npy array (frames x 32).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def run(text: str, model: str | None, tokenizer: str | None, speaker: int, max_audio_ms: float,
        temperature: float, topk: int, top_p: float | None, min_p: float | None,
        repetition_penalty: float | None, frequency_penalty: float | None, presence_penalty: float | None,
        logit_bias: tuple[str, ...], min_frames: int, guard_special_codes: bool, sampler: str | None,
        seed: int | None, backend: str | None, threads: int | None, backend_option: tuple[str, ...],
        codes_out: str | None, progress: bool | None) -> None:
    """Speak TEXT with CSM.

    \b
    Example:
      ccsm run "Hello there." --model ~/csm-1b --codes-out frames.npy
    """
    import numpy as np

    from .backends import get_backend
    from .generator import GenerationSettings, Generator, check_turn, make_sampler
    from .models.loader import load_csm

    check_turn(speaker, text)
    if not model:
        raise UsageError("no model given", "pass --model DIR (a CSM-1B folder: config.json, model.safetensors, "
                         "tokenizer.json) or set CCSM_MODEL")
    if not codes_out:
        raise UsageError("nothing to write", "pass --codes-out FILE.npy")
    settings = GenerationSettings(
        max_audio_ms=max_audio_ms, temperature=temperature, topk=topk, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, frequency_penalty=frequency_penalty,
        presence_penalty=presence_penalty, logit_bias=_parse_bias(logit_bias), min_frames=min_frames,
        guard_special=guard_special_codes, seed=seed, sampler=sampler)
    make_sampler(settings)  # validate sampling options before the (slow) model load
    options = _parse_kv(backend_option, "--backend-option")
    if threads is not None:
        options["threads"] = threads
    be = get_backend(backend, **options)
    loaded = load_csm(model, be, tokenizer=tokenizer)
    gen = Generator(loaded.model, loaded.tokenizer)
    show = sys.stderr.isatty() if progress is None else progress
    frames = _collect(gen.frames(text, speaker, (), settings), settings.max_frames, show)
    arr = np.stack(frames) if frames else np.zeros((0, loaded.config.audio_num_codebooks), np.int64)
    np.save(codes_out, arr)
    click.echo(f"{len(frames)} frames ({len(frames) * 0.08:.2f} s of audio) -> {codes_out}", err=True)


def _collect(frames: Any, total: int, show: bool) -> list[Any]:
    from tqdm import tqdm

    out = []
    with tqdm(total=total, unit="frame", disable=not show, desc="generating", leave=False) as bar:
        for f in frames:
            out.append(f)
            bar.update(1)
    return out


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records.")
@click.option("--hook", default=None, help="Only plugins implementing this hook (e.g. register_backends).")
@click.option("--check", is_flag=True, help="Exit 1 if any plugin failed, conflicts or is incompatible.")
@click.option("-v", "--verbose", is_flag=True, help="Show entry points and full errors.")
def plugins(as_json: bool, hook: str | None, check: bool, verbose: bool) -> None:
    """List plugins, their status and what each registered."""
    from .plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.build_all()
    records = sorted(pm.records.values(), key=lambda r: (not r.builtin, r.name))
    if hook:
        records = [r for r in records if hook in r.hooks]
    if as_json:
        click.echo(json.dumps([r.as_json() for r in records], indent=2))
    else:
        rows = [("PLUGIN", "VERSION", "STATUS", "REGISTERED")]
        for r in records:
            what = r.error if r.status != "ok" else " · ".join(
                f"{k}: {', '.join(v)}" for k, v in r.registered.items()) or "(nothing)"
            name = f"{r.name} (built-in)" if r.builtin else r.name
            rows.append((name, r.version, r.status, what))
            if verbose and r.entry_point:
                rows.append(("", "", "", f"entry point: {r.entry_point}"))
        _table(rows)
    if check and any(r.status in ("failed", "conflict", "incompatible") for r in records):
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records.")
def backends(as_json: bool) -> None:
    """List compute backends, whether each can run here, and why not."""
    from .backends import backend_status
    from .plugins import registry

    out = []
    for e in registry("backends"):
        reason = backend_status(e)
        if e.conflict_with:
            reason = f"conflict: also registered by {', '.join(e.conflict_with)}"
        out.append({"name": e.name, "plugin": e.plugin, "priority": e.metadata.get("priority", 0),
                    "devices": list(e.metadata.get("devices", ("cpu",))), "available": reason is None,
                    "reason": reason, "summary": e.summary})
    out.sort(key=lambda r: -r["priority"])
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    rows = [("BACKEND", "PLUGIN", "PRIORITY", "DEVICES", "AVAILABLE")]
    for r in out:
        rows.append((r["name"], r["plugin"], str(r["priority"]), ",".join(r["devices"]),
                     "yes" if r["available"] else f"no: {r['reason']}"))
    _table(rows)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def main() -> None:
    cli(prog_name="ccsm")
