"""Reading one stream of a batch whose readers take turns: each read steps the whole batch
until this stream has an output (`ccsm_core.batching`, `ccsm_core.text_batch`)."""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class BatchStream(Protocol):
    out: deque[Any]  # outputs made, not read yet
    done: bool
    error: BaseException | None  # raised to the reader once its outputs are read


class SteppedBatch(Protocol):
    def step(self) -> None: ...

    def leave(self, st: Any) -> None: ...


class Reader(Generic[T]):
    """The outputs of stream ``st`` of ``batch``; closing (or dropping) it leaves the batch."""

    def __init__(self, batch: SteppedBatch, st: BatchStream) -> None:
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
