"""The stage interface: what every step of a call's pipeline looks like to `CallPipeline`.

A stage is a small object kept for one call. `push` takes the next item (an audio block, a
transcript, an emotion ...) and returns the events it produced now; `flush` is called once at the
end of the call and returns what was still pending. Stages never stamp sequence numbers or
publish: the pipeline does that, so a stage can be tested alone with plain inputs.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out")


class Stage(Protocol[In, Out]):
    def push(self, item: In) -> list[Out]: ...

    def flush(self) -> list[Out]: ...
