"""One live call: its inbox and its worker, the only writer of the call's events.

Everything that happens to a call (audio, an operator's feedback, a source's error, the end) is a
typed message in the call's inbox. The worker runs the pipeline in a thread, stamps the events
(the pipeline does, in the worker's thread only), persists them as they happen, then hands them to
the fan-out. Any exception in a stage ends the call with a fatal `error` and `call_ended`, and what
the call had is saved. The inbox is bounded: when a call falls behind, ingest stops reading its
socket (backpressure) instead of dropping audio.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import soundfile as sf

from callsense.audio.codecs import AudioChunk
from callsense.config import SAMPLE_RATE, Settings
from callsense.events import INCOMPLETE, Error, Event, TranscriptFinal
from callsense.pipeline import CallPipeline, StageFailed
from callsense.reports.audio_redaction import Span, seal, seal_interrupted, spans_to_silence, spool_path
from callsense.reports.privacy import Redactor
from callsense.reports.report import build_report, save_report
from callsense.reports.store import Store
from callsense.service.mailbox import Mailbox

log = logging.getLogger("callsense.calls")
R = TypeVar("R")
MAX_STEP_S = 1.0  # audio merged into one pipeline step when a call is behind
REVISION_WAIT_S = 30.0  # after a call's end, its last revisions are waited for this long, then dropped
M_ARENA_MAX = -8  # glibc's mallopt parameter


def call_executor() -> ThreadPoolExecutor:
    """The threads that run live calls, one per busy call (Whisper's concurrency is bounded by the
    DecodeGate, not by this pool). glibc gives threads that contend for malloc arenas of their own,
    up to 8 per core, and seldom gives their memory back: a server grew about 50 MB with each round
    of 4 concurrent calls (soak, docs/benchmarks.md), flat with one arena per core. So the arenas are
    capped first, unless the user set MALLOC_ARENA_MAX."""
    if not os.environ.get("MALLOC_ARENA_MAX"):
        cap_malloc_arenas(os.cpu_count() or 2)
    return ThreadPoolExecutor(max_workers=64, thread_name_prefix="call")


def cap_malloc_arenas(arenas: int) -> bool:
    """True when the C library took the cap (glibc on Linux); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # a C library without mallopt
        return False


@dataclass
class _Message:
    entry: str = field(default="", kw_only=True)  # its id in the broker's input stream (cluster)


@dataclass
class Audio(_Message):
    chunk: AudioChunk
    arrived: float  # monotonic time the frame was received


@dataclass
class Feedback(_Message):
    hint_id: str
    action: str
    by: str


@dataclass
class Note(_Message):
    """A supervisor's note to the call's operator; `joining`: they are joining the call."""

    text: str
    joining: bool
    by: str


@dataclass
class SourceError(_Message):
    code: str
    message: str


@dataclass
class End(_Message):
    reason: str


Message = Audio | Feedback | Note | SourceError | End
FromConsole = Feedback | Note  # what a console may put into a call
# call id, events, their redacted copies (None: not for redacted views - partials, see _redact_and_store)
Publish = Callable[[str, list[Event], list[Event | None]], Awaitable[None]]


class Inbox(Protocol):
    @property
    def closed(self) -> bool: ...

    async def put(self, item: Message) -> bool: ...

    def put_nowait(self, item: Message) -> None: ...

    def __len__(self) -> int: ...


class LiveCall(Protocol):
    """What ingest and the server need of a call: a `Call` here, or a call on a cluster worker."""

    call_id: str
    operator_id: str | None
    task: asyncio.Task[None] | None
    ended: bool
    failure: str | None
    last_lag: float

    @property
    def inbox(self) -> Inbox: ...

    @property
    def stream_time(self) -> float: ...


class Call:
    """A live call: `inbox` takes messages from ingest and consoles; `task` runs `work()`."""

    def __init__(
        self,
        call_id: str,
        operator_id: str | None,
        source: str,
        pipeline: CallPipeline,
        settings: Settings,
        store: Store | None,
        executor: Executor,
        publish: Publish,
    ) -> None:
        self.call_id, self.operator_id, self.source = call_id, operator_id, source
        self.settings, self.store, self.executor, self.publish = settings, store, executor, publish
        self.inbox: Mailbox[Message] = Mailbox(int(settings.server.call_queue_s * SAMPLE_RATE), _samples)
        self.pipeline: CallPipeline | None = pipeline
        self.ended = False
        self.failure: str | None = None  # why the call ended abnormally, if it did
        self.started = time.monotonic()
        self.last_lag = 0.0
        self.task: asyncio.Task[None] | None = None
        self.consumed: Message | None = None  # the last message the pipeline has been through
        self._recording: sf.SoundFile | None = None
        self._silence: list[Span] = []  # where personal data was said: silenced in the kept audio
        self._redactor = Redactor()  # the call's turns in order: a number may run over two of them
        if settings.report.keep_audio and store is not None:
            path = kept_audio(store, call_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            # spooled while the call runs; sealed with the values silenced when it ends
            self._recording = sf.SoundFile(spool_path(path), "w", SAMPLE_RATE, len(pipeline.roles), format="FLAC")

    @property
    def stream_time(self) -> float:
        return self.pipeline.stream_time if self.pipeline else 0.0

    async def work(self) -> None:
        assert self.pipeline is not None
        pipe = self.pipeline
        log.info(
            "call started",
            extra={"call_id": self.call_id, "source": self.source, "operator_id": self.operator_id, "event": "call_start"},
        )
        try:
            await self._emit(await self._run(pipe.start))
            while True:
                msg = self.consumed = await self.inbox.get()
                if isinstance(msg, End):
                    await self._emit(await self._run(pipe.finish, msg.reason))
                    # post-call, before the record is written: the last revised finals
                    await self._emit(await self._run(pipe.revisions, REVISION_WAIT_S))
                    break
                await self._emit(await self._handle(pipe, msg))
        except asyncio.CancelledError:  # shutdown ran out of time: end as interrupted with what we have
            await self._abort(pipe, "interrupted", "the server stopped before this call finished")
            raise
        except StageFailed as exc:  # a stage failed: the call ends, loudly, and keeps what it had
            log.exception("call %s failed", self.call_id)
            await self._emit(exc.events)
            await self._abort(pipe, "stage_failed", str(exc))
        except Exception as exc:  # anything else (audio, I/O): the same, without partial results
            log.exception("call %s failed", self.call_id)
            await self._abort(pipe, "stage_failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.inbox.close()  # a source still sending to a failed call is told instead of waiting forever
            await self._close(pipe)

    async def _handle(self, pipe: CallPipeline, msg: Message) -> list[Event]:
        if isinstance(msg, Feedback):
            return pipe.feedback(msg.hint_id, msg.action, msg.by)
        if isinstance(msg, Note):
            return pipe.note(msg.text, msg.joining, msg.by)
        if isinstance(msg, SourceError):
            return pipe.fail(msg.code, msg.message)
        assert isinstance(msg, Audio)
        # batch what queued up meanwhile: fewer, larger steps when the call falls behind
        budget = [MAX_STEP_S * SAMPLE_RATE - msg.chunk.audio.shape[1]]

        def fits(m: Message) -> bool:  # at most MAX_STEP_S per step: events (and their persistence) keep flowing
            if not isinstance(m, Audio) or m.chunk.audio.shape[1] > budget[0]:
                return False
            budget[0] -= m.chunk.audio.shape[1]
            return True

        batch = [msg, *self.inbox.take_while(fits)]
        self.consumed = batch[-1]
        chunks = [m.chunk for m in batch if isinstance(m, Audio)]
        merged = AudioChunk(np.concatenate([c.audio for c in chunks], axis=1), chunks[0].start)
        if self._recording is not None:
            self._recording.write(merged.audio.T)
        return await self._run(pipe.push, merged, msg.arrived)

    async def _run(self, fn: Callable[..., R], *args: object) -> R:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _emit(self, events: list[Event]) -> None:
        if not events:
            return
        for ev in events:
            if ev.type == "metrics":
                self.last_lag = ev.lag_s
        redacted = await self._run(self._redact_and_store, events)
        await self.publish(self.call_id, events, redacted)

    def _redact_and_store(self, events: list[Event]) -> list[Event | None]:
        """One redaction step (in the call's thread: names need NER) for the disk and supervisors.
        Partials are not redacted: the name recogniser costs about 30 ms a text, a partial is
        superseded within a second and never stored, so redacted views (supervisors) get finals only."""
        if not self.settings.report.redact_pii:
            if self.store is not None:
                self.store.append_events(self.call_id, events)
            return list(events)
        self._redactor.language = self.language
        lasting = iter(self._redactor([e for e in events if e.type != "transcript_partial"]))
        redacted = [None if e.type == "transcript_partial" else next(lasting) for e in events]
        if self._recording is not None:
            for ev in events:
                if isinstance(ev, TranscriptFinal):
                    self._silence += spans_to_silence(ev, self._redactor.found.get(ev.utterance_id, []))
        if self.store is not None:
            self.store.append_events(self.call_id, [e for e in redacted if e is not None])
        return redacted

    @property
    def language(self) -> str:
        return (self.pipeline.language if self.pipeline else None) or "en"

    async def _abort(self, pipe: CallPipeline, code: str, message: str) -> None:
        """End the call without running the stages again (they may be what failed)."""
        self.failure = f"{code}: {message}"
        await asyncio.shield(self._emit(pipe.abort(code, message)))

    async def _close(self, pipe: CallPipeline) -> None:
        self.ended = True
        if self._recording is not None:
            self._recording.close()
        await asyncio.shield(self._run(self._persist, pipe))
        self.pipeline = None  # the call's models state and audio leave memory now

    def _persist(self, pipe: CallPipeline) -> list[Event]:
        events = list(pipe.events)
        status = call_status(events)
        self._redact_late_values(events)
        try:
            persist_report(self.settings, self.store, self.call_id, events, self.source, status, self.seal_audio())
        except Exception:  # persisting must not take the server down
            log.exception("could not persist call %s", self.call_id)
        self.log_end(events, status)
        return []

    def _redact_late_values(self, events: list[Event]) -> None:
        """A value found only in a later turn (its cue came then) was stored unredacted in the turns
        before: those rows are written again, and their audio is silenced there too, before the
        kept audio is sealed. (Such a value was on redacted views live: supervisors are told nothing new.)"""
        if self.store is None or not self.settings.report.redact_pii or not self._redactor.known:
            return
        if self._recording is not None:  # only turns that hold a known value; spans silenced live are not counted twice
            had = set(self._silence)
            for ev in events:
                if isinstance(ev, TranscriptFinal) and ev.text and (known := self._redactor.known_in(ev.text)):
                    self._silence += [span for span in spans_to_silence(ev, known) if span not in had]
        if n := redact_stored_again(self.store, self.call_id, self._redactor):
            log.info("call %s: %d stored events redacted again with values found later", self.call_id, n)

    def log_end(self, events: list[Event], status: str) -> None:
        """One line per call end for operations: ids, length, status, error codes (never call text)."""
        ended = next((e for e in reversed(events) if e.type == "call_ended"), None)
        errors = sorted({e.code for e in events if isinstance(e, Error)})
        log.info(
            "call ended: %s",
            status,
            extra={
                "call_id": self.call_id,
                "source": self.source,
                "operator_id": self.operator_id,
                "event": "call_end",
                "status": status,
                "duration_s": round(getattr(ended, "duration_s", 0.0) or 0.0, 1),
                "errors": errors,
            },
        )

    def seal_audio(self) -> dict[str, Any] | None:
        """The kept audio with personal data silenced (None when audio is not kept)."""
        if self._recording is None or self.store is None:
            return None
        if not self._recording.closed:
            self._recording.close()
        path = kept_audio(self.store, self.call_id)
        try:
            sealed = seal(spool_path(path), path, self._silence)
            if sealed.get("kept"):  # the report's "listen here" links play it from beside the report
                sealed["file"] = os.path.relpath(path, self.store.call_dir("reports", self.call_id))
            return sealed
        except (RuntimeError, OSError, ValueError):  # the report is still written; no raw audio stays
            log.exception("could not seal the kept audio of call %s; it is deleted", self.call_id)
            spool_path(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            return {"kept": False, "silenced_spans": 0, "silenced_s": 0.0}


PURGE_EVERY_S = 3600.0  # retention is swept at start and then hourly, in one process and in every worker


def purge_expired(settings: Settings, store: Store) -> list[str]:
    """Retention: results older than report.retention_days go, with their reports and audio - only inside
    the store (paths are hashes of the ids, never the ids)."""
    import shutil

    gone = store.purge_older_than(settings.report.retention_days)
    for call_id in gone:
        shutil.rmtree(store.call_dir("reports", call_id), ignore_errors=True)
        kept_audio(store, call_id).unlink(missing_ok=True)
        spool_path(kept_audio(store, call_id)).unlink(missing_ok=True)
    return gone


async def sweep_retention(
    settings: Settings, store: Store, executor: Executor, every_s: float = PURGE_EVERY_S, first_after_s: float = 0.0
) -> None:
    """Purge after `first_after_s`, then every `every_s`, until cancelled: a long-lived server or cluster
    worker keeps the bank's retention promise, not only one that restarts."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(first_after_s)
    while True:
        try:
            await loop.run_in_executor(executor, purge_expired, settings, store)
        except Exception:  # a locked or damaged store must not stop the service; the next sweep tries again
            log.exception("retention sweep failed")
        await asyncio.sleep(every_s)


def _samples(msg: Message) -> int:
    """A message's weight in a call's inbox: its audio samples over all channels (others weigh one)."""
    return msg.chunk.audio.size if isinstance(msg, Audio) else 1


def call_status(events: list[Event]) -> str:
    """interrupted (a fatal error), incomplete (the source left or went silent: the end may be missing), done."""
    errors = [e for e in events if isinstance(e, Error)]
    if any(e.fatal for e in errors):
        return "interrupted"
    return "incomplete" if any(e.code in INCOMPLETE for e in errors) else "done"


def persist_report(
    settings: Settings,
    store: Store | None,
    call_id: str,
    events: list[Event],
    source: str,
    status: str,
    audio: dict[str, Any] | None = None,
) -> None:
    """Write a call's report files and close its row in the store (`audio`: what was done to kept audio)."""
    if store is None:
        return
    report = build_report(events, settings, source, audio=audio)
    save_report(report, store.call_dir("reports", call_id))
    store.finish_call(call_id, report, status=status)


def redact_stored_again(store: Store, call_id: str, redactor: Redactor) -> int:
    """The call's stored rows written again (the same sequence numbers) wherever a value the redactor
    knows now is still in them; how many were."""
    again = [new for ev in store.events(call_id, who="system:redaction") if (new := redactor.redact_known(ev)) is not ev]
    if again:
        store.append_events(call_id, again)
    return len(again)


def kept_audio(store: Store, call_id: str) -> Path:
    return store.call_dir("audio", call_id).with_suffix(".flac")


def recover_interrupted(settings: Settings, store: Store) -> list[str]:
    """Calls a killed process left `live` end as interrupted, with the events they had on disk."""
    recovered = []
    for call_id, source, _operator in store.live_calls():
        events = store.events(call_id, who="system:recovery")
        log.warning("call %s was interrupted (%d events kept)", call_id, len(events))
        audio = seal_interrupted(spool_path(kept_audio(store, call_id)), kept_audio(store, call_id), events)
        try:
            persist_report(settings, store, call_id, events, source, "interrupted", audio)
        except Exception:
            log.exception("could not rebuild the report of interrupted call %s", call_id)
            store.finish_call(call_id, None, "interrupted", "report could not be rebuilt")
        recovered.append(call_id)
    return recovered
