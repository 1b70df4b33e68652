"""A small FIFO for one consumer task (asyncio.Queue hides its items; we need to batch and prune)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """`maxsize` makes `put` wait: backpressure onto the sender. Items count as `weight(item)` against
    it (1 each by default; a call's inbox weighs audio by its samples, so the bound is in seconds of
    audio whatever the frames' size). The owner may take the waiting items in a batch (`take_while`)
    or prune them (`keep_only`)."""

    def __init__(self, maxsize: int = 0, weight: Callable[[T], int] = lambda _: 1) -> None:
        self.items: deque[T] = deque()
        self.maxsize, self.weight = maxsize, weight
        self.size = 0  # the items' total weight
        self.closed = False
        self._ready, self._space = asyncio.Event(), asyncio.Event()

    def __len__(self) -> int:
        return len(self.items)

    async def put(self, item: T) -> bool:
        """False when the consumer has stopped (`close`): a sender waiting for space is let go, not left
        waiting for a consumer that will never take another item."""
        while self.maxsize and self.size >= self.maxsize and not self.closed:
            self._space.clear()
            await self._space.wait()
        if self.closed:
            return False
        self.put_nowait(item)
        return True

    def close(self) -> None:
        """The consumer is done: what waits is dropped, and senders are turned away from now on."""
        self.closed = True
        self.items.clear()
        self.size = 0
        self._space.set()

    def put_nowait(self, item: T) -> None:
        self.items.append(item)
        self.size += self.weight(item)
        self._ready.set()

    async def get(self) -> T:
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        self._space.set()
        item = self.items.popleft()
        self.size -= self.weight(item)
        return item

    def take_while(self, wanted: Callable[[T], bool]) -> list[T]:
        """Items from the front, as long as they are `wanted`."""
        out = []
        while self.items and wanted(self.items[0]):
            out.append(self.items.popleft())
            self.size -= self.weight(out[-1])
        self._space.set()
        return out

    def keep_only(self, wanted: Callable[[T], bool]) -> int:
        """Drop the waiting items that are not `wanted`; returns how many were dropped."""
        before = len(self.items)
        self.items = deque(item for item in self.items if wanted(item))
        self.size = sum(self.weight(item) for item in self.items)
        self._space.set()
        return before - len(self.items)
