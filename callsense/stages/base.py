"""The stage protocols `CallPipeline` is typed against: what each step of a call looks like to it.

A stage is a small object kept for one call. Three small protocols, combined per stage:

- `Stage[In, Out]`: `push` takes the next item (a transcript, an emotion ...) and returns the
  events it produced now; `flush` is called once at the end of the call with what was pending.
- `Listener`: `hear` gets every block of the call's audio as it arrives ((channels, samples));
  `seek` starts a stage at a later sample (a call taken over from another worker).
- `Checkpointed[S]`: `state` is what another worker needs to go on exactly as this one would;
  `restore` takes it back.

Stages never stamp sequence numbers or publish: the pipeline does that for the events it passes
on, so a stage can be tested alone with plain inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from callsense.events import (
    Emotion,
    Hint,
    HintFeedback,
    Overlap,
    Risk,
    TranscriptFinal,
    TranscriptPartial,
)

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out")
S = TypeVar("S")

Transcript = TranscriptPartial | TranscriptFinal


class Stage(Protocol[In, Out]):
    def push(self, item: In) -> list[Out]: ...

    def flush(self) -> list[Out]: ...


class Listener(Protocol):
    def hear(self, audio: np.ndarray) -> None: ...

    def seek(self, sample: int) -> None: ...


class Checkpointed(Protocol[S]):
    def state(self) -> S: ...

    def restore(self, state: S) -> None: ...


class ListeningStage(Stage[In, Out], Listener, Protocol[In, Out]):
    """A stage that also hears the audio (speakers: diarization; emotion: the voice)."""


class AudioGate(Checkpointed[str], Protocol):
    """Audio in, audio out, a few frames behind (the stereo echo gate)."""

    @property
    def pending(self) -> int: ...

    def __call__(self, audio: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray | None: ...


@dataclass
class TranscriberState:
    """Where a speaker stream's transcriber stands at a checkpoint (nobody speaking)."""

    sample: int  # samples of the stream heard
    utterances: int  # utterances the VAD cut so far (ids go on from here)
    vad: dict[str, str] | None = None  # the VAD's state: the same speech is cut into the same utterances
    decoding: dict[str, Any] | None = None  # the speaker's language and prompt: decoded the same way


class Transcriber(Stage[np.ndarray, Transcript], Checkpointed[TranscriberState], Protocol):
    """One speaker stream's audio in, partial and final transcripts out."""

    @property
    def speaking(self) -> bool: ...

    @property
    def heard_until(self) -> float: ...

    def set_partials(self, on: bool) -> None: ...

    def end_revisions(self) -> None: ...

    def revise_rest(self, deadline: float | None) -> list[TranscriptFinal]: ...


class HintStage(Stage[TranscriptFinal | Emotion | Overlap, Hint], Checkpointed[int], Protocol):
    """Hints from what was said and how, and from the clock (holds and silences)."""

    def tick(self, now: float, speaking: bool, heard_until: float = 0.0) -> list[Hint]: ...


RiskStage = Stage[Emotion | Hint | HintFeedback, Risk]
