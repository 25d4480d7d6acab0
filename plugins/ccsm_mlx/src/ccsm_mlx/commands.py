"""``ccsm mlx convert`` (fill the conversion cache) and ``ccsm mlx cache`` (show or clear it).

Imports only click at module level; MLX and the models load when a command runs."""

from __future__ import annotations

import time

import click

_DTYPES = ["f32", "f16", "bf16"]
_BITS = ["2", "3", "4", "5", "6", "8"]


@click.group("mlx")
def mlx_group() -> None:
    """Tools of the MLX backend (plugin ccsm-mlx)."""


@mlx_group.command("convert")
@click.argument("model")
@click.option(
    "--dtype", type=click.Choice(_DTYPES), default=None, help="Float type of the weights [default: as stored]."
)
@click.option("--quantize", type=click.Choice(_BITS), default=None, help="Quantize 2-D weights to this many bits.")
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128"]),
    default="64",
    show_default=True,
    help="Weights sharing one scale and bias.",
)
@click.option(
    "--tokenizer", type=click.Path(exists=True, dir_okay=False), help="tokenizer.json, if not with the model."
)
@click.option("--mimi", type=click.Path(dir_okay=False), help="Mimi weights, if not with the model.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache folder [default: $CCSM_MLX_CACHE or ~/.cache/ccsm/mlx].",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def convert(
    model: str,
    dtype: str | None,
    quantize: str | None,
    group_size: str,
    tokenizer: str | None,
    mimi: str | None,
    cache_dir: str | None,
    progress: bool | None,
) -> None:
    """Convert MODEL's CSM and Mimi weights for MLX and cache the result on disk.

    Loads MODEL (a CSM folder, .gguf, repo id or 'demo') exactly as `ccsm run --backend mlx`
    would with the same options, so that run finds every costly conversion already done:

      ccsm mlx convert ~/models/csm-1b --dtype bf16 --quantize 4
      ccsm run "Hello" -m ~/models/csm-1b -b mlx --backend-option dtype=bf16 --backend-option quantize=4
    """
    from ccsm_core.speech import load_speech

    from .backend import MlxBackend

    be = MlxBackend(
        dtype=dtype, quantize=quantize, group_size=int(group_size), cache="auto", cache_dir=cache_dir, progress=progress
    )
    t0 = time.perf_counter()
    load_speech(model, be, tokenizer=tokenizer, mimi=mimi)
    seconds = time.perf_counter() - t0
    be.end_progress()
    if be.cache is None:  # cache="auto" above always makes one
        raise RuntimeError("mlx backend made no weight cache")
    ls, st = be.load_stats, be.cache.stats
    click.echo(
        f"{ls['tensors']} tensors ({ls['source_bytes'] / 1e6:.1f} MB stored) as {be.precision.key()} in {seconds:.1f} s"
    )
    click.echo(
        f"cache {be.cache.root}: {st['hits']} found, {st['written']} written "
        f"({st['bytes_written'] / 1e6:.1f} MB), {st['rebuilt']} damaged and rebuilt"
    )
    if st["hits"] + st["written"] == 0:
        click.echo(
            "nothing to cache: with these options every tensor is a plain copy or cast, which loading "
            "does as fast as reading a cache entry"
        )
    opts = "".join(f" --backend-option {k}={v}" for k, v in (("dtype", dtype), ("quantize", quantize)) if v)
    if group_size != "64":
        opts += f" --backend-option group_size={group_size}"
    click.echo(f"run with: ccsm run TEXT --model {model} --backend mlx{opts}")


@mlx_group.command("cache")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Cache folder.")
@click.option("--clear", is_flag=True, help="Remove every entry.")
def cache_cmd(cache_dir: str | None, clear: bool) -> None:
    """Show (or clear) the cache of converted weights."""
    from .cache import WeightCache

    cache = WeightCache(cache_dir)
    if clear:
        click.echo(f"removed {cache.clear()} entries from {cache.root}")
        return
    n, size = cache.size()
    click.echo(f"{cache.root}: {n} entries, {size / 1e6:.1f} MB")
