"""Fan-out: events of every call to the consoles allowed to see them, with resume by sequence number.

- Each call is a room with a bounded replay buffer. A console that resumes (`{"type":"resume",
  "after":{call_id: seq}}`) gets what it missed, with no loss and no duplicate; a new console gets
  live calls only. An ended call stays resumable for `resume_window_s`, then leaves memory (its
  events are on disk).
- Each console has a bounded queue: when it falls behind, partials and metrics are dropped first
  (and the console is told); finals, emotions and hints are never dropped - a console too slow even
  for those is disconnected (4008) and can resume.
- Console messages (resume, feedback) are checked against a schema; a bad one gets an `error`
  message and the connection stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from callsense.audio.protocols import error_json
from callsense.config import ServerSettings, TokenGrant
from callsense.events import FINAL_TYPES, NOTE_CHARS, Event
from callsense.reports.store import Store
from callsense.service import disputes
from callsense.service.calls import Feedback, FromConsole, Note
from callsense.service.disputes import DecisionMessage, DisputeMessage
from callsense.service.mailbox import Mailbox

CallIdText = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResumeMessage(_Message):
    type: Literal["resume"]
    after: dict[CallIdText, Annotated[int, Field(ge=0, le=2**53)]] = Field(default_factory=dict, max_length=1000)


class FeedbackMessage(_Message):
    type: Literal["feedback"]
    call_id: CallIdText
    hint_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    action: Literal["accepted", "dismissed"]


class NoteMessage(_Message):
    """A supervisor's note to the operator of a call they watch; `joining`: "I'm joining"."""

    type: Literal["note"]
    call_id: CallIdText
    text: Annotated[str, StringConstraints(min_length=1, max_length=NOTE_CHARS, strip_whitespace=True)]
    joining: bool = False


class SummaryMessage(_Message):
    """Asks for the call's summary so far (reason, done, promised, open), to paste into the ticket."""

    type: Literal["summary"]
    call_id: CallIdText


Input = FeedbackMessage | NoteMessage | SummaryMessage | DisputeMessage | DecisionMessage
ConsoleInput = Annotated[Input, Field(discriminator="type")]
INPUT: TypeAdapter[Input] = TypeAdapter(ConsoleInput)
M = TypeVar("M", ResumeMessage, Input)


@dataclass
class Room:
    call_id: str
    operator_id: str | None
    replay: deque[tuple[Event, Event | None]]  # each event and its redacted copy (None: raw views only)
    ended_at: float | None = None  # monotonic
    risk: float = 0.0
    escalations: set[str] = field(default_factory=set)  # hints for a supervisor to acknowledge


@dataclass(eq=False)  # identity-hashed: consoles live in a set
class Console:
    who: str
    role: str
    operator_id: str | None
    follow: str | None = None  # one call only
    queue: Mailbox[Event | None] = field(default_factory=Mailbox)  # bounded by FanOut.offer
    dropped: int = 0
    too_slow: bool = False
    viewed: set[str] = field(default_factory=set)  # calls whose view is in the access log


OnInput = Callable[[str, FromConsole], Awaitable[bool]]  # call id, what a console put into it -> delivered


class FanOut:
    def __init__(
        self,
        settings: ServerSettings,
        store: Store | None,
        on_input: OnInput,
        redact_operator_view: bool = False,
        redact_pii: bool = True,
    ) -> None:
        self.settings, self.store, self.on_input = settings, store, on_input
        self.redact_operator_view, self.redact_pii = redact_operator_view, redact_pii
        self.rooms: dict[str, Room] = {}
        self.consoles: set[Console] = set()

    # -- rooms --

    def open(self, call_id: str, operator_id: str | None) -> None:
        self.rooms[call_id] = Room(call_id, operator_id, deque(maxlen=self.settings.replay_events))

    def live(self) -> list[Room]:
        return [r for r in self.rooms.values() if r.ended_at is None]

    def evict(self) -> None:
        """Ended calls past the resume window leave memory."""
        cutoff = time.monotonic() - self.settings.resume_window_s
        for cid in [c for c, r in self.rooms.items() if r.ended_at is not None and r.ended_at < cutoff]:
            del self.rooms[cid]

    async def publish(self, call_id: str, events: list[Event], redacted: list[Event | None] | None = None) -> None:
        room = self.rooms.get(call_id)
        if room is None:  # left memory after its end (revisions come later): the store still gets them
            return
        for ev, red in zip(events, redacted if redacted is not None else events, strict=True):
            room.replay.append((ev, red))
            if ev.type == "risk":  # computed once, by the call's escalation stage
                room.risk = ev.level
            elif ev.type == "hint" and ev.to_supervisor:
                room.escalations.add(ev.hint_id)
            elif ev.type == "call_ended":
                room.ended_at = time.monotonic()
            for console in list(self.consoles):
                if self.may_see(console, room) and console.follow in (None, call_id):
                    view = ev if self.sees_raw(console, room) else red
                    if view is not None:
                        self.offer(console, view)
        self.evict()

    # -- consoles --

    @staticmethod
    def may_see(console: Console, room: Room) -> bool:
        return console.role == "supervisor" or (console.operator_id is not None and console.operator_id == room.operator_id)

    def sees_raw(self, console: Console, room: Room) -> bool:
        """Only the call's own operator may see it unredacted (unless `report.redact_operator_view`);
        supervisors see what the disk holds."""
        return not self.redact_operator_view and console.role == "operator" and console.operator_id == room.operator_id

    def offer(self, console: Console, ev: Event) -> None:
        q, limit = console.queue, self.settings.console_queue
        if console.too_slow:
            return
        if len(q) >= limit:
            if ev.type not in FINAL_TYPES:
                console.dropped += 1
                return
            # make room by dropping queued partials/metrics; never finals, emotions or hints
            console.dropped += q.keep_only(lambda e: e is not None and e.type in FINAL_TYPES)
            if len(q) >= limit:
                console.too_slow = True
                q.put_nowait(None)  # tells the sender to disconnect; the console resumes by sequence
                return
        q.put_nowait(ev)

    async def serve(self, ws: ServerConnection, grant: TokenGrant, who: str, follow: str | None) -> None:
        console = Console(who=who, role=grant.role, operator_id=grant.operator_id, follow=follow)
        after = await self._first_message(ws)
        self.consoles.add(console)  # events published from now on queue up (dedup by seq below)
        sent: dict[str, int] = dict(after)
        try:
            await self._replay(ws, console, after, sent)
            tasks = [asyncio.create_task(self._send(ws, console, sent)), asyncio.create_task(self._receive(ws, console))]
            # whichever side ends first (client gone, too slow, server closing) ends the other
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, ConnectionClosed):
                    raise exc
        except ConnectionClosed:
            pass
        finally:
            self.consoles.discard(console)

    async def _first_message(self, ws: ServerConnection) -> dict[str, int]:
        """An optional resume message first; anything else there is answered and otherwise ignored."""
        with contextlib.suppress(TimeoutError):
            raw = await asyncio.wait_for(ws.recv(), 0.5)
            try:
                return self._parse(raw, ResumeMessage).after
            except ValueError as exc:
                await ws.send(error_json("bad_message", str(exc)))
        return {}

    def _parse(self, raw: str | bytes, model: TypeAdapter[M] | type[M]) -> M:
        if len(raw) > self.settings.max_console_message_bytes:
            raise ValueError(
                f"message of {len(raw)} bytes; consoles may send at most {self.settings.max_console_message_bytes}"
            )
        try:
            return model.validate_json(raw) if isinstance(model, TypeAdapter) else model.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"could not use that message: {where}: {first['msg']}") from None

    async def _replay(self, ws: ServerConnection, console: Console, after: dict[str, int], sent: dict[str, int]) -> None:
        """Live calls from the start, ended ones only when this console was following them."""
        for room in list(self.rooms.values()):
            if not self.may_see(console, room) or console.follow not in (None, room.call_id):
                continue
            if room.ended_at is not None and room.call_id not in after:
                continue
            self._log_view(console, room.call_id)
            raw = self.sees_raw(console, room)
            for pair in list(room.replay):
                ev = pair[0] if raw else pair[1]
                if ev is not None and ev.seq > sent.get(ev.call_id, 0):
                    await ws.send(_with_delay(ev))
                    sent[ev.call_id] = ev.seq

    async def _send(self, ws: ServerConnection, console: Console, sent: dict[str, int]) -> None:
        reported = 0
        while True:
            ev = await console.queue.get()
            if ev is None:
                await ws.close(4008, "console too slow: reconnect and resume from your last sequence number")
                return
            if ev.seq <= sent.get(ev.call_id, 0):
                continue
            self._log_view(console, ev.call_id)  # a call that started while this console watched
            if console.dropped > reported:
                await ws.send(
                    json.dumps(
                        {
                            "type": "notice",
                            "message": f"{console.dropped - reported} partial updates skipped (console behind)",
                        }
                    )
                )
                reported = console.dropped
            await ws.send(_with_delay(ev))
            sent[ev.call_id] = ev.seq

    def _log_view(self, console: Console, call_id: str) -> None:
        """Every console's view of a call is in the access log, once per connection: calls live when it
        joined, and calls that started while it watched."""
        if call_id not in console.viewed:
            console.viewed.add(call_id)
            if self.store is not None:
                self.store.log_access(console.who, call_id, "console view")

    async def _receive(self, ws: ServerConnection, console: Console) -> None:
        async for raw in ws:
            try:
                msg = self._parse(raw, INPUT)
                if isinstance(msg, DisputeMessage | DecisionMessage):  # after the call: the store, not a room
                    await ws.send(self._dispute(console, msg))
                    continue
                room = self.rooms.get(msg.call_id)
                if room is None or not self.may_see(console, room):
                    raise ValueError(f"no call {msg.call_id!r} that you may see")
                if isinstance(msg, SummaryMessage):
                    await ws.send(self._summary(console, room))
                    continue
                _check_role(console, room, msg)
                given: FromConsole = (
                    Feedback(msg.hint_id, msg.action, console.who)
                    if isinstance(msg, FeedbackMessage)
                    else Note(msg.text, msg.joining, console.who)
                )
                if not await self.on_input(msg.call_id, given):
                    raise ValueError(f"call {msg.call_id!r} has ended; nothing more is recorded in it")
                if isinstance(msg, NoteMessage) and self.store is not None:
                    self.store.log_access(console.who, msg.call_id, "note")  # who spoke into which call
            except ValueError as exc:
                await ws.send(error_json("bad_message", str(exc)))

    def _dispute(self, console: Console, msg: DisputeMessage | DecisionMessage) -> str:
        if self.store is None:
            raise ValueError("this process keeps no calls: disputes go to the server that stores them")
        row = disputes.take(self.store, msg, console.who, console.role, console.operator_id, self.redact_pii)
        return json.dumps({"type": "dispute", **row}, ensure_ascii=False)

    def _summary(self, console: Console, room: Room) -> str:
        """The call's summary from what this console may see of it (redacted for redacted views); the
        reading is in the access log."""
        from callsense.reports.report import call_language, finals, open_escalations
        from callsense.reports.summary import call_summary

        raw = self.sees_raw(console, room)
        events = [ev for pair in list(room.replay) if (ev := pair[0] if raw else pair[1]) is not None]
        turns = finals(events)  # a revision replaces its live final; an empty one withdraws it
        if self.store is not None:
            self.store.log_access(console.who, room.call_id, "summary")
        body = call_summary(turns, call_language(turns), open_escalations(events))
        return json.dumps({"type": "summary", "call_id": room.call_id, **body}, ensure_ascii=False)


def _check_role(console: Console, room: Room, msg: FeedbackMessage | NoteMessage) -> None:
    """Operators accept or dismiss their hints; supervisors acknowledge escalations (which only they
    release: an operator's answer to a critical hint is recorded, the supervisor's alert stays) and
    write notes to the operator."""
    if isinstance(msg, NoteMessage):
        if console.role != "supervisor":
            raise ValueError("only supervisors send notes to a call's operator")
        return
    if console.role == "supervisor" and msg.hint_id not in room.escalations:
        raise ValueError("supervisors acknowledge escalations; the operator accepts or dismisses the other hints")


def _with_delay(ev: Event) -> str:
    """The event as sent now, with the honest delay since its audio arrived."""
    arrived = ev._arrived
    if arrived is None:
        return ev.model_dump_json()
    return ev.model_copy(update={"delay_s": round(time.monotonic() - arrived, 3)}).model_dump_json()
