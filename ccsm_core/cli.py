"""The ``ccsm`` command line. Heavy modules are imported inside commands, never at start-up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any

import click

from .commands.common import print_table
from .errors import CcsmError, UsageError
from .version import __version__


def usage_line(e: click.ClickException) -> str:
    """A click error as one line, ``<cause> (hint: see 'ccsm CMD --help')``."""
    text = " ".join(e.format_message().split()).rstrip(".")
    text = text[:1].lower() + text[1:]
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "ccsm"
    return f"{text} (hint: see '{where} --help')"


def _fail(line: str) -> None:
    """Print ``error: line`` and exit 2."""
    click.echo(f"error: {line}", err=True)
    raise click.exceptions.Exit(2)


def _check_text(args: list[str]) -> None:
    """Arguments (and CCSM_* variables, which become option values) must be valid UTF-8."""
    named = [(f"argument {i + 1}", a) for i, a in enumerate(args)]
    named += [(f"${k}", v) for k, v in os.environ.items() if k.startswith("CCSM_")]
    for what, value in named:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UsageError(
                f"{what} ({shown!r}) is not valid UTF-8",
                "pass text and paths as UTF-8; rename a file whose name is not",
            ) from None


class CcsmGroup(click.Group):
    """Adds plugin commands on first lookup; every error is one line
    ``error: <cause> (hint: <fix>)`` and exit 2, click's usage errors included."""

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

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            _check_text(args)
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.ClickException as e:
            _fail(usage_line(e))
        except CcsmError as e:  # from an option's callback (--config, --max-memory)
            if os.environ.get("CCSM_DEBUG"):
                raise
            _fail(e.one_line())
        raise AssertionError("unreachable")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.ClickException as e:
            _fail(usage_line(e))
        except CcsmError as e:
            if os.environ.get("CCSM_DEBUG"):
                raise
            _fail(e.one_line())
        except OSError as e:  # a file that cannot be read or written (EIO, EACCES, ...)
            if os.environ.get("CCSM_DEBUG") or isinstance(e, BrokenPipeError):
                raise
            _fail(_os_error_line(e))
        except MemoryError:
            if os.environ.get("CCSM_DEBUG"):
                raise
            _fail("out of memory (hint: give a smaller input, or lower --max-memory so that large files fail at once)")
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(143 if _terminated else 130)


_terminated = False  # a SIGTERM arrived


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM stops ccsm as Ctrl-C does (outputs cleaned up, a stream's audio kept), through
    the SIGINT handler in place, so that code watching for the user's Ctrl-C sees it too."""
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    raise KeyboardInterrupt


def _os_error_line(e: OSError) -> str:
    name = e.filename if isinstance(e.filename, str) else None
    cause = e.strerror or type(e).__name__
    text = f"cannot use {name}: {cause}" if name else f"input/output failed: {cause}"
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return f"{text} (hint: check the path, its permissions and the free space)"


def _load_defaults(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .config import load_config

    assert isinstance(ctx.command, click.Group)
    ctx.default_map = load_config(value, ctx.command)
    return value


def _set_max_memory(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .limits import parse_size, set_max_memory

    set_max_memory(parse_size(value) if value else None)
    return value


@click.group(cls=CcsmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ccsm")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_defaults,
    help="TOML file of option defaults (else $CCSM_CONFIG or ~/.config/ccsm/config.toml).",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    envvar="CCSM_MAX_MEMORY",
    is_eager=True,
    expose_value=False,
    callback=_set_max_memory,
    help="Most memory a file may make ccsm allocate, e.g. 8G or 512M; larger requests fail at once. "
    "[default: the memory available] [env: CCSM_MAX_MEMORY]",
)
def cli() -> None:
    """ccsm: Sesame's CSM speech model and Llama-family GGUF models, locally.

    Backends, formats, tokenizers, samplers and watermarks are plugins: see `ccsm plugins`.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records.")
@click.option("--hook", default=None, help="Only plugins implementing this hook (e.g. register_backends).")
@click.option("--check", is_flag=True, help="Exit 1 if any plugin failed, conflicts or is incompatible.")
@click.option("-v", "--verbose", is_flag=True, help="Show entry points and full errors.")
def plugins(as_json: bool, hook: str | None, check: bool, verbose: bool) -> None:
    """List plugins, their status and what each registered."""
    from .plugins import FAILING, get_plugin_manager

    pm = get_plugin_manager()
    pm.build_all()
    root = click.get_current_context().find_root()
    if isinstance(root.command, CcsmGroup):
        root.command.list_commands(root)  # plugins add their commands (one that fails is recorded)
    records = sorted(pm.records.values(), key=lambda r: (not r.builtin, r.name))
    if hook:
        records = [r for r in records if hook in r.hooks]
    if as_json:
        click.echo(json.dumps([r.as_json() for r in records], indent=2))
    else:
        rows: list[tuple[str, ...]] = [("PLUGIN", "VERSION", "STATUS", "REGISTERED")]
        for r in records:
            what = (
                " ".join((r.error or "").split())  # one line; a disabled plugin has no error
                if r.status != "ok"
                else " · ".join(f"{k}: {', '.join(v)}" for k, v in r.registered.items()) or "(nothing)"
            )
            name = f"{r.name} (built-in)" if r.builtin else r.name
            rows.append((str(name), str(r.version or ""), str(r.status), what))
            if verbose and r.entry_point:
                rows.append(("", "", "", f"entry point: {r.entry_point}"))
            if verbose and r.where:
                rows.append(("", "", "", f"raised at: {r.where}"))
        print_table(rows)
    if check and any(r.status in FAILING for r in records):
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records.")
def backends(as_json: bool) -> None:
    """List compute backends, whether each can run here, and why not."""
    from .backends import backend_details, backend_status
    from .plugins import registry

    out: list[dict[str, Any]] = []
    for e in registry("backends"):
        reason = backend_status(e)
        if e.conflict_with:
            reason = f"conflict: also registered by {', '.join(e.conflict_with)}"
        details = backend_details(e) if reason is None else None
        out.append(
            {
                "name": e.name,
                "plugin": e.plugin,
                "priority": e.priority,
                "devices": list(e.devices),
                "batching": e.batching,
                "available": reason is None,
                "reason": reason,
                "summary": e.summary,
                "details": details,
            }
        )
    out.sort(key=lambda r: -r["priority"])
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    rows: list[tuple[str, ...]] = [("BACKEND", "PLUGIN", "PRIORITY", "DEVICES", "BATCHING", "AVAILABLE")]
    for r in out:
        rows.append(
            (
                r["name"],
                r["plugin"],
                str(r["priority"]),
                ",".join(r["devices"]),
                "yes" if r["batching"] else "one at a time",
                ("yes" + (f" — {r['details']}" if r["details"] else "")) if r["available"] else f"no: {r['reason']}",
            )
        )
    print_table(rows)


from .commands import codec, dialogue, models, text  # noqa: E402  (light: click only)
from .commands import run as run_cmd  # noqa: E402
from .commands import serve as serve_cmd  # noqa: E402
from .commands import voice as voice_cmd  # noqa: E402

cli.add_command(run_cmd.run)
cli.add_command(dialogue.dialogue)
cli.add_command(codec.encode)
cli.add_command(codec.decode)
cli.add_command(models.download)
cli.add_command(models.convert)
cli.add_command(models.inspect)
cli.add_command(models.bench)
cli.add_command(voice_cmd.voice)
cli.add_command(serve_cmd.serve)
for _cmd in (text.generate, text.chat, text.tokenize, text.quantize):
    cli.add_command(_cmd)


def main() -> None:
    with contextlib.suppress(ValueError, AttributeError):  # not in the main thread, or no SIGTERM
        signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="ccsm")
