"""What the batches of `ccsm_core.batching` (speech) and `ccsm_core.text_batch` (text) share:
streams wait in a queue, join free slots between steps and keep the active slots packed (the
last one moves into a freed slot), and each stream's reader steps the whole batch until its
stream has an output, so readers may take turns in any order."""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Protocol, TypeVar

from .errors import UsageError

T = TypeVar("T")
MAX_SLOTS = 64


class BatchStream(Protocol):
    out: deque[Any]  # outputs made, not read yet
    slot: int  # its slot while active, else -1
    done: bool
    error: BaseException | None  # raised to the reader once its outputs are read


S = TypeVar("S", bound=BatchStream)


class SlotBatch(Generic[S]):
    """Up to ``slots`` active streams of type ``S`` and a queue of waiting ones. Subclasses
    give `_admit` (prefill a stream and give it slot ``len(active)``), `_move` (copy a stream's
    rows to another slot) and `step`; ``batched`` says the backend computes a batch in one pass
    (it has ``matmul_rows``), else the streams are computed one after another."""

    def __init__(self, slots: int, be: Any) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise UsageError(
                f"batch size must be an integer in 1..{MAX_SLOTS}, got {slots!r}",
                f"give a batch size from 1 to {MAX_SLOTS}",
            )
        self.slots = slots
        self.batched = hasattr(be, "matmul_rows")
        self._active: list[S] = []  # in slot order
        self._waiting: deque[S] = deque()
        self.steps = 0  # batched steps run

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def step(self) -> None:
        raise NotImplementedError

    def _admit(self, st: S) -> None:
        raise NotImplementedError

    def _move(self, st: S, slot: int) -> None:
        raise NotImplementedError

    def _admit_waiting(self) -> None:
        """Waiting streams into free slots; one whose prompt fails ends, only its reader sees why."""
        while self._waiting and len(self._active) < self.slots:
            st = self._waiting.popleft()
            try:
                self._admit(st)
            except Exception as e:
                st.done, st.error = True, e

    def _release(self, st: S) -> None:
        """Free ``st``'s slot; the last active stream moves into it (slots stay packed)."""
        if st not in self._active:
            return
        j, last = st.slot, self._active.pop()
        if last is not st:
            self._move(last, j)
            self._active[j], last.slot = last, j
        st.slot = -1

    def leave(self, st: S) -> None:
        """``st`` ends now (its reader closed): its slot or its place in the queue is freed."""
        st.done = True
        if st in self._waiting:
            self._waiting.remove(st)
        self._release(st)


class Reader(Generic[T]):
    """The outputs of stream ``st`` of ``batch``; closing (or dropping) it leaves the batch."""

    def __init__(self, batch: SlotBatch[Any], st: BatchStream) -> None:
        self.batch, self.st = batch, st

    def __iter__(self) -> Reader[T]:
        return self

    def __next__(self) -> T:
        st = self.st
        while not st.out and not st.done:
            self.batch.step()
        if st.out:
            out: T = st.out.popleft()
            return out
        self.close()
        if st.error is not None:
            error, st.error = st.error, None
            raise error
        raise StopIteration

    def close(self) -> None:
        """Leave the batch (outputs not read yet are dropped)."""
        self.batch.leave(self.st)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
