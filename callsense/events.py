"""The event model: the one vocabulary every stage emits and the server sends.

Every event carries the call id, a per-call sequence number that only grows, and the
stream time (seconds of call audio since the call started). `SCHEMA_VERSION` changes
whenever a field changes meaning; `callsense schema` prints the JSON schema.
"""

from __future__ import annotations

import itertools
import time
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter

SCHEMA_VERSION = "1.4"

Role = Literal["operator", "customer", "supervisor", "unknown"]
Severity = Literal["info", "warning", "critical"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: str = SCHEMA_VERSION
    call_id: str = ""
    seq: int = 0
    t: float = Field(0.0, description="stream time in seconds since the call started")
    wall: float = Field(default_factory=time.time, description="unix time the event was made")
    delay_s: float | None = Field(
        None,
        description="set by the server on sending: seconds from the arrival of the "
        "audio this event comes from until it was sent to this console",
    )
    _arrived: float | None = PrivateAttr(default=None)  # monotonic arrival time of that audio (this process)

    def arrived_at(self, t: float) -> None:
        if self._arrived is None:
            self._arrived = t


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float = 1.0


class CallStarted(_Base):
    type: Literal["call_started"] = "call_started"
    sample_rate: int
    channels: list[Role]
    source: str = "file"
    operator_id: str | None = None
    language: str | None = None


class _Transcript(_Base):
    speaker: str
    role: Role = "unknown"
    role_confidence: float = 1.0
    channel: int = Field(0, ge=0, le=7, description="the audio channel the words were heard on (0 on a mono call)")
    start: float
    end: float
    text: str
    words: list[Word] = []
    language: str | None = None


class TranscriptPartial(_Transcript):
    type: Literal["transcript_partial"] = "transcript_partial"
    stable_text: str = Field("", description="prefix agreed by consecutive hypotheses")


class TranscriptFinal(_Transcript):
    type: Literal["transcript_final"] = "transcript_final"
    utterance_id: str = ""
    revision: int = Field(
        0,
        ge=0,
        le=1,
        description="0: the live final; 1: the same turn decoded again among the speaker's "
        "neighbouring turns, replacing the final with this utterance_id",
    )
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


class Emotion(_Base):
    type: Literal["emotion"] = "emotion"
    speaker: str
    role: Role = "unknown"
    utterance_id: str = ""
    start: float
    end: float
    valence: float = Field(description="-1 (negative) .. +1 (positive)")
    arousal: float = Field(description="-1 (calm) .. +1 (agitated), against the speaker's own baseline")
    label: str = Field(description="anger, sadness, joy, fear, surprise, neutral or uncertain")
    confidence: float
    sentiment: str = "neutral"
    evidence: dict[str, Any] = {}
    trend: float = Field(0.0, description="smoothed valence change over the speaker's recent turns")


class Hint(_Base):
    type: Literal["hint"] = "hint"
    hint_id: str
    severity: Severity
    reason: str
    title: str
    evidence: dict[str, Any] = {}
    phrases: list[str] = []
    speaker: str | None = None
    to_supervisor: bool = False


class HintFeedback(_Base):
    type: Literal["hint_feedback"] = "hint_feedback"
    hint_id: str
    action: Literal["accepted", "dismissed"]
    by: str = "operator"


NOTE_CHARS = 280


class SupervisorNote(_Base):
    type: Literal["note"] = "note"
    text: str = Field(max_length=NOTE_CHARS, description="a supervisor's note to the call's operator")
    by: str = Field(description="who wrote it (`supervisor:<token name>`)")
    joining: bool = Field(False, description="the supervisor is joining the call (taking over an escalation)")


class Overlap(_Base):
    type: Literal["overlap"] = "overlap"
    start: float
    end: float
    interrupter: str
    interrupted: str


class Metrics(_Base):
    type: Literal["metrics"] = "metrics"
    lag_s: float = Field(description="how far processing is behind the live audio")
    rtf: float | None = None
    shedding: bool = False
    shed_reason: str | None = None
    optional_decodes_skipped: int = Field(
        0,
        ge=0,
        description="partials and speculative finals skipped so far in this "
        "process because the Whisper workers were busy with finals",
    )
    revisions_skipped: int = Field(
        0,
        ge=0,
        description="packs of live turns not decoded again so far in this process "
        "(busy, or not done before the call's record was written): their live finals "
        "stand",
    )
    stage_ms: dict[str, float] = {}


class Risk(_Base):
    type: Literal["risk"] = "risk"
    level: float = Field(
        description="the call's escalation risk: the customer's frustration probability plus 1.5 "
        "while a critical escalation is latched; the one value every console shows"
    )
    frustration: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="the probability that the customer is frustrated now "
        "(the customer state over the conversation, calibrated on labelled dialogues)",
    )
    latched: bool = Field(
        False,
        description="a critical escalation waits for an operator or supervisor to "
        "acknowledge it (or for the customer to recover)",
    )
    reason: str | None = Field(None, description="the latched hint's reason")
    hint_id: str | None = None


class ChecklistItem(BaseModel):
    id: str
    title: str
    status: Literal["pending", "due", "done", "missed", "failed"]
    at_end: bool = Field(False, description="judged on the operator's last turns: may be undone by later ones")


class ChecklistUpdate(_Base):
    type: Literal["checklist"] = "checklist"
    items: list[ChecklistItem] = Field(
        description="every item of the call's script checklist with its status now: what the post-call verdict "
        "would be if the call ended here, `due` while its window is closing (say it now)"
    )
    evidence: dict[str, Any] = Field({}, description="item id -> {t, text}: the operator's words that ticked (or failed) it")


class CallEnded(_Base):
    type: Literal["call_ended"] = "call_ended"
    duration_s: float
    reason: str = "hangup"


# Error codes that say the call's audio may be cut short (the source left without a stop, or went
# silent): the call is stored as "incomplete", its report says so and does not judge its end.
SOURCE_LOST = "source_lost"
SOURCE_SILENT = "source_silent"
INCOMPLETE = frozenset({SOURCE_LOST, SOURCE_SILENT})
# The source withheld or dropped audio mid-call (AudioHook's pause and `discarded`): silence stands in
# for it, and the report is flagged `audio_gap`.
AUDIO_DISCARDED = "audio_discarded"


class Error(_Base):
    type: Literal["error"] = "error"
    code: str
    message: str
    fatal: bool = False


class WorkerChanged(_Base):
    type: Literal["worker_changed"] = "worker_changed"
    worker: str = Field(description="the cluster worker processing the call from now on")
    previous: str | None = Field(None, description="the worker that stopped (died or was cut off)")
    resumed_from: float = Field(
        description="stream time the new worker went on from: a moment nobody was "
        "speaking; what was said before is kept, speaker baselines start again"
    )


Event = Annotated[
    CallStarted
    | TranscriptPartial
    | TranscriptFinal
    | Emotion
    | Hint
    | HintFeedback
    | SupervisorNote
    | Overlap
    | Metrics
    | Risk
    | ChecklistUpdate
    | CallEnded
    | Error
    | WorkerChanged,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
FINAL_TYPES = frozenset(
    {
        "transcript_final",
        "emotion",
        "hint",
        "risk",
        "checklist",
        "note",
        "call_started",
        "call_ended",
        "error",
        "worker_changed",
    }
)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Parse one event from JSON text or a dict; raises pydantic.ValidationError."""
    if isinstance(data, dict):
        return EVENT_ADAPTER.validate_python(data)
    return EVENT_ADAPTER.validate_json(data)


def json_schema() -> dict[str, Any]:
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = f"callsense event v{SCHEMA_VERSION}"
    return schema


E = TypeVar("E", bound=_Base)


class Sequencer:
    """Stamps events of one call with its id and a strictly increasing sequence number."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self._counter = itertools.count(1)

    def restart(self, after: int) -> None:
        """Go on numbering after `after` (a call resumed by another worker)."""
        self._counter = itertools.count(after + 1)

    def stamp(self, event: E) -> E:
        event.call_id = self.call_id
        event.seq = next(self._counter)
        return event
