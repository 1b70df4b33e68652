"""Observability without hand-written timers (after pyannote.audio's `Hooks` / `TimingHook`).

A pipeline runs each step inside `hooks.step(name)`; every hook attached is told the step's name
and how long it took. `TimingHook` keeps totals and the last duration per step, which the
pipeline's `metrics` events and the benchmarks read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol


class Hook(Protocol):
    def __call__(self, step: str, seconds: float) -> None: ...


@dataclass
class TimingHook:
    """Seconds spent per step: `total[step]` over the call, `last[step]` for the latest run."""

    total: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def __call__(self, step: str, seconds: float) -> None:
        self.total[step] = self.total.get(step, 0.0) + seconds
        self.last[step] = seconds

    def busy_s(self) -> float:
        return sum(self.total.values())


class Hooks:
    """Hooks attached to one pipeline; `step` times a block and tells each of them."""

    def __init__(self, *hooks: Hook) -> None:
        self.hooks: list[Hook] = list(hooks)

    def add(self, hook: Hook) -> None:
        self.hooks.append(hook)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            for hook in self.hooks:
                hook(name, seconds)
