"""Threads from the idle cores: fewer compute threads while other processes keep cores busy.

ggml's threads meet at a barrier after every graph node. When the OS deschedules one of them
for another process, the others wait there (spinning, OpenMP's default, or sleeping), so on a
busy machine two threads do much less than one: SmolLM2 on 2 cores beside one busy process
measured 24 generated tok/s with 2 threads against 62 with 1. Sleeping instead of spinning
(``OMP_WAIT_POLICY=PASSIVE``) costs the quiet machine 3x, since every barrier then sleeps.

So `IdleCores` looks, at most every ``interval`` seconds, at how much CPU time the other
processes took on this process's cores since its last look (``/proc/stat`` less this
process's own CPU time) and allows as many threads as there are cores left, at least one and at
most the requested count. It takes one thread away when others use more than half a core, and
gives it back when they leave at least three quarters of it idle. Where ``/proc/stat`` cannot be
read (not Linux) the requested count stands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

INTERVAL = 0.25  # seconds between looks at the machine's load
DOWN_AT, UP_AT = 0.5, 0.25  # cores taken by others past which a thread goes / below which it comes back


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's."""
    cpus = _allowed_cpus()
    return len(cpus) if cpus else (os.cpu_count() or 1)


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def read_busy_seconds(cpus: set[int] | None = None) -> float | None:
    """CPU seconds spent busy (not idle or waiting for I/O) since boot on ``cpus`` (default:
    this process's allowed cores), from ``/proc/stat``; ``None`` where it cannot be read."""
    cpus = _allowed_cpus() if cpus is None else cpus
    try:
        with open("/proc/stat", "rb") as f:
            text = f.read(1 << 20).decode("ascii", "replace")
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    busy = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        try:
            cpu = int(fields[0][3:])
            values = [int(v) for v in fields[1:9]]
        except (ValueError, IndexError):
            continue
        if cpus is None or cpu in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
            busy += user + nice + system + irq + softirq + steal
    return busy / tick if tick > 0 else None


class IdleCores:
    """How many compute threads to use now: ``threads()`` (cheap; re-measures every ``interval``)."""

    def __init__(
        self,
        max_threads: int,
        interval: float = INTERVAL,
        busy: Callable[[], float | None] = read_busy_seconds,
        own: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cpus = _allowed_cpus()
        self.cores = len(cpus) if cpus else (os.cpu_count() or 1)
        self.max_threads, self.interval = max_threads, interval
        self._busy = (lambda: read_busy_seconds(cpus)) if busy is read_busy_seconds else busy
        self._own, self._clock = own, clock
        self.current = max_threads
        self.others = 0.0  # cores the other processes used in the last interval
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        busy = self._busy()
        return None if busy is None else (self._clock(), busy, self._own())

    def threads(self) -> int:
        """The thread count for the next computation."""
        last = self._last
        if last is None or self.max_threads == 1:
            return self.current
        now = self._clock()
        if now - last[0] < self.interval:
            return self.current
        sample = self._sample()
        if sample is None:
            return self.current
        self._last = sample
        wall = sample[0] - last[0]
        others = max(0.0, (sample[1] - last[1]) - (sample[2] - last[2])) / wall
        self.others = others
        idle = self.cores - others
        if idle < self.current - DOWN_AT:  # others took more than half a core of ours
            self.current = max(1, min(self.max_threads, int(idle + DOWN_AT)))
        elif idle >= self.current + 1 - UP_AT:  # a whole core (nearly) free again
            self.current = max(1, min(self.max_threads, int(idle + UP_AT)))
        return self.current
