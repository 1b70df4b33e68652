"""`DecodeGate`: the process-wide admission to Whisper, and the batcher of finals.

Finals of every call queue here and the oldest waits at most `batch_wait_s` for company before its
batch is decoded; partials and speculative finals only run on spare capacity and are never queued.
The gate knows nothing of Whisper: a batch is a list of requests handed to a `run` callable.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Pending:
    key: Hashable
    request: Any
    arrived: float
    caller: object = None
    taken: bool = False
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    # per batch: its oldest final's wait for company (the last 1000 batches)
    waited_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def add(self, size: int, waited: float) -> None:
        self.batches += 1
        self.items += size
        self.waited_s.append(waited)


class DecodeGate:
    """Admission to the Whisper workers, shared by every stream of a process.

    Finals are batched: the oldest waiting final leads a batch, waits until `max_batch` finals of its
    language are waiting or `batch_wait_s` has passed since it arrived (its latency budget), then
    decodes them together in a free slot. It waits only while another caller (another call's
    decoder) is open: a lone call, or an audit worker's one recording, has nobody to wait for.
    Optional decodes (partials, speculative finals) never wait: they run only when a slot is free,
    no final is waiting, and (with several slots) one slot stays free for finals. Under load
    partials thin out instead of pushing every call behind live.
    """

    def __init__(self, slots: int, batch_wait_s: float = 0.0, max_batch: int = 8) -> None:
        self.slots = max(1, slots)
        self.batch_wait_s, self.max_batch = batch_wait_s, max(1, max_batch)
        self.busy = self.waiting = 0
        self.skipped = 0
        self.stats = BatchStats()
        self._pending: list[_Pending] = []
        self._leading = False
        self._cond = threading.Condition()
        # open callers; a call's decoder that was never closed (a failed call) leaves when collected
        self._callers: weakref.WeakSet[Any] = weakref.WeakSet()

    def join(self, caller: object) -> None:
        with self._cond:
            self._callers.add(caller)

    def leave(self, caller: object) -> None:
        with self._cond:
            self._callers.discard(caller)

    @contextmanager
    def final(self) -> Iterator[None]:
        """One slot for work that is not batched (language detection), queued like a final."""
        with self._cond:
            self.waiting += 1
            self._cond.wait_for(lambda: self.busy < self.slots and not self._leading)
            self.waiting -= 1
            self.busy += 1
        try:
            yield
        finally:
            self._release()

    def batched(self, key: Hashable, request: Any, run: Callable[[list[Any]], list[Any]], caller: object = None) -> Any:
        """Decode `request` with other waiting requests of the same `key` through `run` (a list in,
        a result per item out, in order); returns this request's result."""
        me = _Pending(key, request, time.monotonic(), caller)
        with self._cond:
            self._pending.append(me)
            self.waiting += 1
            self._cond.notify_all()
            while not me.taken:
                if not self._leading and self.busy < self.slots and self._pending[0] is me:
                    batch = self._lead(me)
                    break
                self._cond.wait()
            else:
                self._cond.wait_for(lambda: me.done)
                if me.error is not None:
                    raise me.error
                return me.result
        self._run(batch, run)
        if me.error is not None:
            raise me.error
        return me.result

    def _lead(self, me: _Pending) -> list[_Pending]:
        """Called with the lock held: wait for company within the budget, then take the batch."""
        self._leading = True

        def waiting() -> list[_Pending]:
            return [p for p in self._pending if p.key == me.key][: self.max_batch]

        company = any(c is not me.caller for c in self._callers)
        deadline = me.arrived + (self.batch_wait_s if company else 0.0)
        while len(waiting()) < self.max_batch and (left := deadline - time.monotonic()) > 0:
            self._cond.wait(left)
        batch = waiting()
        for p in batch:
            p.taken = True
            self._pending.remove(p)
        self.waiting -= len(batch)
        self.busy += 1
        self._leading = False
        self.stats.add(len(batch), time.monotonic() - me.arrived)
        self._cond.notify_all()
        return batch

    def _run(self, batch: list[_Pending], run: Callable[[list[Any]], list[Any]]) -> None:
        try:
            results = run([p.request for p in batch])
            for p, r in zip(batch, results, strict=True):
                p.result = r
        except BaseException as exc:  # every waiter of the batch gets the error, not a hang
            for p in batch:
                p.error = exc
        finally:
            with self._cond:
                for p in batch:
                    p.done = True
                self.busy -= 1
                self._cond.notify_all()

    @contextmanager
    def optional(self) -> Iterator[bool]:
        """Yields whether the decode may run now; a refused one is counted in `skipped`."""
        with self._cond:
            limit = self.slots - 1 if self.slots > 1 else 1
            admitted = not self.waiting and self.busy < limit
            if admitted:
                self.busy += 1
            else:
                self.skipped += 1
        try:
            yield admitted
        finally:
            if admitted:
                self._release()

    def _release(self) -> None:
        with self._cond:
            self.busy -= 1
            self._cond.notify_all()
