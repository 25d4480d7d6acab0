"""The serving engine: one worker thread owns the models; requests advance in turn.

Each admitted request gets a *lane* (its own KV cache rows over the shared weights: a `Speech`
or a `ccsm_core.text_batch.BatchedSession`) and an event iterator (`ccsm_core.pipeline.speak`,
which yields after every frame, or the lane's ``stream``, after every text piece). The worker
calls ``next`` on each active iterator in turn, so a new request starts streaming while a long
one is still running. Speech lanes share one `ccsm_core.batching.FrameBatch` and text lanes one
`ccsm_core.text_batch.TextBatch`: the frame (token) one request asks for is computed together
with every other active request's next one (one pass over the weights for all), and each
request still gets exactly what it would get alone. Speech lanes also decode their audio
together (`ccsm_core.mimi_lanes.MimiLanes`), bitwise as alone. At
most ``max_active`` run at once; up to ``max_queue`` more wait; beyond that `QueueFull`
(HTTP 429). A cancelled or timed-out request is closed at its next turn (within one frame).

Events reach the request's consumer through a `Ticket`: iterate it (``for ev in ticket``) from
any thread, or ``async for ev in ticket`` on the event loop it was submitted from.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import BUG_HINT, CcsmError, UsageError
from ..pipeline import Audio, Finished

_DONE = object()


class QueueFull(CcsmError):
    """Too many requests are waiting; try again after ``retry_after`` seconds."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"{waiting} requests are waiting already", f"retry after {retry_after} s")
        self.retry_after = retry_after


class Cancelled(CcsmError):
    """The request was cancelled (its client went away) or ran past its time limit."""


KEEP = 4096  # per-request figures kept (the newest); counts are kept in full


@dataclass
class Stats:
    """What the engine did, for /metrics: counts by kind and outcome, and the newest per-request
    figures (``observed`` counts every figure ever recorded, so a reader can take only new ones)."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, outcome) -> count
    ttfa_s: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))  # speech: submit -> first audio
    rtf: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))  # speech: wall s per audio s
    tokens_per_s: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))  # text
    observed: dict[str, int] = field(default_factory=lambda: {"ttfa_s": 0, "rtf": 0, "tokens_per_s": 0})

    def count(self, kind: str, outcome: str) -> None:
        self.requests[(kind, outcome)] = self.requests.get((kind, outcome), 0) + 1

    def record(self, name: str, value: float) -> None:
        """Add a figure to ``ttfa_s``, ``rtf`` or ``tokens_per_s``."""
        getattr(self, name).append(value)
        self.observed[name] += 1


class Ticket:
    """One request: its events as they come (an error ends them by being raised)."""

    _ids = itertools.count(1)

    def __init__(self, kind: str, make: Callable[[Any], Iterator[Any]], loop: asyncio.AbstractEventLoop | None) -> None:
        self.id = next(self._ids)
        self.kind, self.make = kind, make
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.first_audio: float | None = None
        self.audio_s = 0.0
        self.tokens = 0
        self.cancelled = False
        self._loop = loop
        self._async: asyncio.Queue[Any] | None = asyncio.Queue() if loop is not None else None
        self._sync: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.iterator: Iterator[Any] | None = None

    def cancel(self) -> None:
        """Stop this request (at its next turn in the worker)."""
        self.cancelled = True

    def _put(self, item: Any) -> None:
        if self._loop is not None and self._async is not None:
            try:
                self._loop.call_soon_threadsafe(self._async.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening
                self.cancelled = True
        else:
            self._sync.put(item)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._sync.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def __aiter__(self) -> AsyncIterator[Any]:
        assert self._async is not None, "submit from the event loop to iterate asynchronously"
        while True:
            item = await self._async.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Engine:
    """Owns the loaded models and runs every request on one worker thread (see module doc).

    ``speech`` is a `ccsm_core.speech.Speech` (or None), ``text`` a `LoadedText` (or None)."""

    def __init__(
        self,
        speech: Any = None,
        text: Any = None,
        *,
        max_active: int = 4,
        max_queue: int = 16,
        timeout_s: float = 600.0,
    ) -> None:
        if max_active < 1 or max_queue < 0:
            raise UsageError(
                "max_active must be >= 1 and max_queue >= 0",
                "pass --max-active 1 or more and --max-queue 0 or more",
            )
        self.speech, self.text = speech, text
        self.max_active, self.max_queue, self.timeout_s = max_active, max_queue, timeout_s
        self.stats = Stats()
        self._free: dict[str, list[Any]] = {"speech": [], "text": []}
        self._pending: deque[Ticket] = deque()
        self._active: list[Ticket] = []
        self._lanes: dict[int, Any] = {}
        self._batch: Any = None  # the speech lanes' shared FrameBatch, made with the first lane
        self._mimi_lanes: Any = None  # and their shared Mimi decoding (`ccsm_core.mimi_lanes`)
        self._text_batch: Any = None  # the text lanes' shared TextBatch, likewise
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ccsm-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def stopping(self) -> bool:
        """`stop` was called: new requests are refused, running ones end."""
        return self._stop

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return len(self._active)

    # -- requests ----------------------------------------------------------------------------
    def submit(
        self, kind: str, make: Callable[[Any], Iterator[Any]], *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Ticket:
        """Queue a request: ``make(lane)`` returns its event iterator once it is admitted (a lane
        is a `Speech` for "speech", a `BatchedSession` for "text"). Raises `QueueFull`."""
        if kind not in self._free:
            raise UsageError(f"unknown request kind {kind!r}", BUG_HINT)
        if (self.speech if kind == "speech" else self.text) is None:
            raise UsageError(f"no {kind} model is loaded", f"start the server with a {kind} model")
        ticket = Ticket(kind, make, loop)
        with self._cv:
            if self._stop:
                raise Cancelled("the server is stopping", "retry when it is back")
            if len(self._pending) >= self.max_queue + self.max_active - len(self._active):
                self.stats.count(kind, "rejected")
                raise QueueFull(len(self._pending), retry_after=max(1, len(self._pending)))
            self._pending.append(ticket)
            self._cv.notify()
        return ticket

    def _lane(self, kind: str) -> Any:
        free = self._free[kind]
        if free:
            return free.pop()
        if kind == "speech":
            from ..batching import FrameBatch

            if self._batch is None:
                from ..mimi_lanes import MimiLanes

                self._batch = FrameBatch(self.speech.generator.model, slots=self.max_active)
                mimi = self.speech.mimi
                self._mimi_lanes = MimiLanes(mimi, self.max_active) if mimi is not None else None
            return self.speech.lane(self._batch, self._mimi_lanes)
        from ..text_batch import TextBatch

        if self._text_batch is None:
            self._text_batch = TextBatch(self.text, slots=self.max_active)
        return self._text_batch.lane()

    # -- the worker --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._pending and not self._active:
                    self._cv.wait()
                if self._stop:
                    for t in [*self._active, *self._pending]:
                        self._end(
                            t,
                            Cancelled(
                                "the server is stopping",
                                "send the request again when the server is back",
                            ),
                        )
                    return
                while self._pending and len(self._active) < self.max_active:
                    t = self._pending.popleft()
                    if t.cancelled:
                        self._end(t, Cancelled("cancelled while waiting", "send the request again"), count=False)
                        continue
                    self._active.append(t)
                active = list(self._active)
            for t in active:
                self._turn(t)

    def _turn(self, t: Ticket) -> None:
        """Advance ``t`` by one event (a frame or a token)."""
        try:
            if t.cancelled:
                raise Cancelled("cancelled", "send the request again")
            if time.monotonic() - t.submitted > self.timeout_s:
                raise Cancelled(f"the request ran past {self.timeout_s:g} s", "ask for less, or raise --timeout")
            if t.iterator is None:
                lane = self._lane(t.kind)
                self._lanes[t.id] = lane
                t.started = time.monotonic()
                t.iterator = t.make(lane)
            ev = next(t.iterator)
            if ev is None:  # a turn without an event (a text prompt is still being prefilled)
                return
        except StopIteration:
            self._end(t, None)
            return
        except CcsmError as e:
            self._end(t, e)
            return
        except Exception as e:  # a bug: the request fails, the engine goes on
            self._end(t, e)
            return
        self._observe(t, ev)
        t._put(ev)

    def _observe(self, t: Ticket, ev: Any) -> None:
        if isinstance(ev, Audio) and t.first_audio is None:
            t.first_audio = time.monotonic()
            self.stats.record("ttfa_s", t.first_audio - t.submitted)
        elif isinstance(ev, Finished):
            t.audio_s = len(ev.frames) * 0.08
        elif isinstance(ev, str):
            t.tokens += 1

    def _end(self, t: Ticket, error: BaseException | None, *, count: bool = True) -> None:
        if t.iterator is not None and hasattr(t.iterator, "close"):
            try:
                t.iterator.close()
            except Exception:
                pass
        lane = self._lanes.pop(t.id, None)
        if lane is not None:
            self._free[t.kind].append(lane)
        with self._cv:
            if t in self._active:
                self._active.remove(t)
        if count:
            outcome = "ok" if error is None else ("cancelled" if isinstance(error, Cancelled) else "error")
            self.stats.count(t.kind, outcome)
        if error is None and t.started is not None:
            wall = time.monotonic() - t.started
            if t.kind == "speech" and t.audio_s > 0:
                self.stats.record("rtf", wall / t.audio_s)
            if t.kind == "text" and t.tokens and wall > 0:
                self.stats.record("tokens_per_s", t.tokens / wall)
        if error is not None:
            t._put(error)
        t._put(_DONE)
