"""Running one case in this process: its outcome (success, a `CcsmError`, or a failure of some
kind), where in ccsm it failed, its time and its peak memory; and driving a target's cases with
Hypothesis."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from ...errors import CcsmError
from .case import Case
from .seeds import Seeds
from .target import Target, Violation

FAILURE_KINDS = ("traceback", "message", "output", "crash", "hang", "memory")
MEMORY_BASE = 1 << 30  # a case may use 1 GiB plus twice its input's size
FUZZ_BUDGET = "512M"  # CCSM_MAX_MEMORY while fuzzing: file-sized allocations beyond it are refused
_PACKAGE = str(Path(__file__).resolve().parents[2])
_SELF = str(Path(__file__).resolve().parent)


@dataclass
class Outcome:
    """What one case did. ``kind``: ``ok``, ``error`` (a proper `CcsmError`) or a failure kind."""

    kind: str
    detail: str = ""
    where: str = ""
    trace: str = ""
    peak_rss: int = 0
    rss_before: int = 0
    seconds: float = 0.0
    size: int = 0

    @property
    def failed(self) -> bool:
        return self.kind in FAILURE_KINDS

    @property
    def key(self) -> str:
        """What tells distinct failures apart: the kind, the exception type and where it arose."""
        first = re.sub(r"\d+", "#", self.detail.split(":", 1)[0][:60])  # "RSS reached # MiB" once
        return f"{self.kind}|{first}|{self.where}"


def memory_limit(size: int) -> int:
    return MEMORY_BASE + 2 * size


def _status(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status`` in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def where_in_ccsm(tb: TracebackType | None) -> str:
    """The innermost frame of ccsm's own code (not the fuzz harness) in a traceback."""
    found = ""
    for frame, line in traceback.walk_tb(tb):
        path = os.path.realpath(frame.f_code.co_filename)
        if path.startswith(_PACKAGE) and not path.startswith(_SELF):
            found = f"{os.path.relpath(path, os.path.dirname(_PACKAGE))}:{line} in {frame.f_code.co_name}"
    return found


def classify(exc: BaseException) -> Outcome:
    """The outcome a case that raised ``exc`` had."""
    if isinstance(exc, CcsmError):
        if not exc.hint or not str(exc).strip():  # the CLI prints it as one line: it needs a hint
            detail = f"{type(exc).__name__} without a cause or a hint: {exc.one_line()[:200]}"
            return Outcome("message", detail, where_in_ccsm(exc.__traceback__))
        return Outcome("error", exc.one_line()[:300])
    if isinstance(exc, Violation):
        return Outcome(exc.kind, str(exc)[:300], where_in_ccsm(exc.__traceback__))
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome("traceback", last[:300], where_in_ccsm(exc.__traceback__), trace[-6000:])


class CaseTimeout(Exception):
    """A case ran past its time limit (raised by the alarm of `guarded`)."""


@contextlib.contextmanager
def guarded(size: int, timeout: float) -> Iterator[None]:
    """Run a case in this process with its limits: `CaseTimeout` after ``timeout`` seconds (an
    alarm), and an address-space limit of `memory_limit` beyond what is mapped now, so a runaway
    allocation fails instead of taking the machine (Linux; elsewhere only the alarm)."""
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    old_limit = None
    try:
        import resource

        old_limit = resource.getrlimit(resource.RLIMIT_AS)
        mapped = _status("VmSize")
        if mapped:
            resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_limit(size), old_limit[1]))
    except (ImportError, ValueError, OSError):
        old_limit = None
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, old_limit)


def _alarm(signum: int, frame: object) -> None:
    raise CaseTimeout("the case ran past its time limit")


def execute(
    target: Target, case: Case, folder: Path, *, in_process_limits: float | None = None, written: bool = False
) -> Outcome:
    """Materialize ``case`` in ``folder`` (unless ``written``) and run ``target`` on it.
    ``in_process_limits``: a time limit in seconds, with the memory limit as an address-space
    limit (see `guarded`), for runs without a watching parent process."""
    if not written:
        case.write(folder)
    size = case.size
    before = _status("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    guard = guarded(size, in_process_limits) if in_process_limits else contextlib.nullcontext()
    try:
        with guard:
            target.run(folder)
        outcome = Outcome("ok")
    except KeyboardInterrupt:
        raise
    except CaseTimeout:
        outcome = Outcome("hang", f"no result after {in_process_limits} s")
    except MemoryError as e:
        outcome = classify(e)
        outcome.kind = "memory"
    except BaseException as e:  # noqa: BLE001 - every escape is an outcome
        outcome = classify(e)
    outcome.seconds = time.perf_counter() - start
    outcome.peak_rss, outcome.rss_before, outcome.size = _status("VmHWM"), before, size
    if outcome.peak_rss - before > memory_limit(size) and not outcome.failed:
        outcome = Outcome(
            "memory",
            f"peak RSS grew by {(outcome.peak_rss - before) >> 20} MiB",
            "",
            "",
            outcome.peak_rss,
            before,
            outcome.seconds,
            size,
        )
    return outcome


def drive(
    target: Target,
    seeds: Seeds,
    count: int,
    on_case: Callable[[Case], None],
    *,
    seed: int | None = None,
    derandomize: bool = False,
) -> None:
    """Call ``on_case`` on ``count`` cases Hypothesis makes for ``target`` (``seed`` fixes them;
    ``on_case`` should not raise: a failure it raises stops the run)."""
    strategy = target.cases(seeds)
    config = settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=derandomize,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )

    @config
    @given(strategy)
    def run(case: Case) -> None:
        on_case(case)

    if seed is not None and not derandomize:
        run = hypothesis_seed(seed)(run)
    run()


def fuzz_environment(root: Path) -> dict[str, str]:
    """Environment settings that keep a fuzz run to itself: its own caches, config, data, the
    fuzz memory budget, no network."""
    return {
        "CCSM_MAX_MEMORY": FUZZ_BUDGET,
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "CCSM_DATA_DIR": str(root / "data"),
        "HF_HUB_OFFLINE": "1",
        "CCSM_CONFIG": "",
    }
