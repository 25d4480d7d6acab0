"""Calling plugin code so that nothing it raises takes the CLI down.

Whatever plugin code raises while the core calls it (importing the plugin, its hooks,
``available()``, ``describe()``, ``sniff()``, factories, a watermarker's methods) is contained:
a `CcsmError` passes through (it is the plugin's message to the user), an `OSError` naming a
file passes through (the CLI reports it as a file problem), and anything else, ``SystemExit``,
``GeneratorExit`` and a ``KeyboardInterrupt`` the code raised itself included, becomes a
`PluginError` naming the plugin, or, while plugins load, marks that plugin ``failed``.

The user's Ctrl-C still stops ccsm: while plugin code runs in the main thread a SIGINT is
watched (`SigintWatch`), and a ``KeyboardInterrupt`` after a SIGINT that really arrived during
the call passes through unchanged. A third-party sampler called once per token (`Contained`)
lets every ``KeyboardInterrupt`` through. A backend's tensor operations during generation are not
wrapped: a Ctrl-C there stops the run as usual.
"""

from __future__ import annotations

import signal
import threading
import traceback
from types import FrameType, TracebackType
from typing import Any

from .errors import CcsmError, PluginError

MAX_REASON = 300  # characters of a plugin's error shown on its one line


class SigintWatch:
    """``with SigintWatch() as w:`` ... ``w.arrived`` tells whether a SIGINT came in meanwhile.

    The handler in place keeps working (Python's default one still raises
    ``KeyboardInterrupt``); outside the main thread, or when SIGINT is not handled in Python,
    nothing is watched."""

    arrived = False

    def __enter__(self) -> SigintWatch:
        self.arrived = False
        self._previous: Any = None
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return self

        def note(signum: int, frame: FrameType | None) -> Any:
            self.arrived = True
            return previous(signum, frame)

        signal.signal(signal.SIGINT, note)
        self._previous = previous
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def passes(self, error: BaseException) -> bool:
        """Whether ``error`` is the user's Ctrl-C (let through), not something plugin code raised."""
        return isinstance(error, KeyboardInterrupt) and self.arrived


def reason(error: BaseException) -> str:
    """``Type: message`` on one line, shortened to `MAX_REASON` characters."""
    text = " ".join(str(error).split())
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def where(error: BaseException) -> str | None:
    """``file:line`` of the innermost frame that raised ``error``, if known."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ is not None else []
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def fix_hint(plugin: str) -> str:
    """What a user can do about a failing plugin."""
    if plugin.startswith("ccsm."):
        return "this is a bug in ccsm; run again with CCSM_DEBUG=1 and report the traceback"
    return f"update or uninstall the plugin, or skip it with CCSM_DISABLE_PLUGINS={plugin} (see `ccsm plugins`)"


class guarded:
    """``with guarded(plugin, "backend 'x' factory"):`` runs plugin code: anything it raises
    other than a `CcsmError`, an `OSError` naming a file or the user's Ctrl-C becomes
    ``PluginError("plugin <plugin>: <what> raised <Type>: <message>", hint)``."""

    def __init__(self, plugin: str, what: str, hint: str | None = None) -> None:
        self.plugin, self.what = plugin, what
        self.hint = hint if hint is not None else fix_hint(plugin)
        self.watch = SigintWatch()

    def __enter__(self) -> guarded:
        self.watch.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.watch.__exit__()
        if error is None or isinstance(error, CcsmError) or self.watch.passes(error):
            return
        if isinstance(error, OSError) and error.filename is not None:
            return
        raise PluginError(f"plugin {self.plugin}: {self.what} raised {reason(error)}", self.hint) from error

    def fail(self, problem: str) -> PluginError:
        """A `PluginError` for a result that breaks the contract (``problem``: what is wrong)."""
        return PluginError(f"plugin {self.plugin}: {self.what} {problem}", self.hint)


class Contained:
    """A plugin's callable that is called again and again while generating (a sampler, once
    per token): ``Contained(fn, plugin, "sampler 'x'")(*args)``. What it raises becomes a
    `PluginError` as with `guarded`, except that a ``KeyboardInterrupt`` always passes: SIGINT
    is not watched on this path (that would cost more than the call), so during generation it
    is taken for the user's Ctrl-C."""

    def __init__(self, fn: Any, plugin: str, what: str) -> None:
        self.fn, self.plugin, self.what = fn, plugin, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.fn(*args, **kwargs)
        except (CcsmError, KeyboardInterrupt):
            raise
        except BaseException as e:
            raise PluginError(f"plugin {self.plugin}: {self.what} raised {reason(e)}", fix_hint(self.plugin)) from e
