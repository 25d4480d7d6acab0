"""User-facing errors: every failure a user can cause is a `CcsmError` with a hint."""

from __future__ import annotations

BUG_HINT = "this is a bug in ccsm or a plugin, not in your input: please report it with the CCSM_DEBUG=1 output"
"""The hint of an error only a mistake in ccsm's (or a plugin's) own code can cause, such as a
backend op called with shapes that do not fit."""


class CcsmError(Exception):
    """Root of all ccsm errors. ``str(e)`` is the one-line cause; ``e.hint`` says what to do."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint

    def one_line(self) -> str:
        """The message the CLI prints: cause and hint on one line."""
        text = " ".join(str(self).split())
        return f"{text} (hint: {self.hint})" if self.hint else text


class UsageError(CcsmError):
    """An option or argument has a value we cannot use."""


class FormatError(CcsmError):
    """A file is missing, truncated, mis-shaped or of an unknown kind."""


class ModelError(CcsmError):
    """A model folder or file does not describe a model we can build."""


class PluginError(CcsmError):
    """A plugin failed, conflicts with another, or a registered name is unknown."""


class BackendUnavailable(PluginError):
    """A backend exists but cannot run here (missing library, device, ...)."""

    default_hint = "pick another with --backend (`ccsm backends` lists those that run here)"


class GenerationError(CcsmError):
    """The request cannot be generated (prompt too long for the context, ...)."""
