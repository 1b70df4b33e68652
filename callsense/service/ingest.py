"""Ingest: one loop for every source protocol (plain, Twilio, mod_audio_fork over websockets, and
Asterisk AudioSocket over TCP). A `Transport` hides how bytes arrive; the protocol parser checks
every message; the call's inbox takes the audio.

Flow control is backpressure: when a call's inbox is full the loop waits, so it stops reading the
socket and TCP slows the sender. Nothing is dropped: a burst after a network stall is kept.
A bad message gets an `error` reply (and an `error` event in the call) and the connection stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from callsense.audio.protocols import IngestProtocol, ProtocolError, StreamStart
from callsense.config import SAMPLE_RATE
from callsense.events import SOURCE_LOST, SOURCE_SILENT
from callsense.service.calls import Audio, End, LiveCall, SourceError

log = logging.getLogger("callsense.ingest")


class Refused(Exception):
    """A call that may not start; `code` is the close code, the message its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Transport(Protocol):
    peer: str

    async def recv(self) -> str | bytes | None: ...  # None: the source hung up

    async def reply(self, message: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class WebsocketTransport:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws, self.peer = ws, str(ws.remote_address[0]) if ws.remote_address else "?"

    async def recv(self) -> str | bytes | None:
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            return None

    async def reply(self, message: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class TcpTransport:
    """AudioSocket: raw TCP. It has no channel for our error messages: they are logged (and sent
    into the call as events), and the connection goes on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        self._said, self._quiet = 0.0, 0  # a line a second at most: a hostile peer cannot fill the log

    async def recv(self) -> str | bytes | None:
        try:
            data = await self.reader.read(4096)
        except ConnectionError:
            return None
        return data or None

    async def reply(self, message: str) -> None:
        now = time.monotonic()
        if now - self._said < 1.0:
            self._quiet += 1
            return
        more = f" (and {self._quiet} more messages)" if self._quiet else ""
        self._said, self._quiet = now, 0
        log.warning("audiosocket %s: %s%s", self.peer, message[:500], more)

    async def close(self, code: int, reason: str) -> None:
        log.warning("audiosocket %s closed: %s", self.peer, reason)
        self.writer.close()


OpenCall = Callable[[StreamStart, str], Awaitable[LiveCall]]  # start, protocol name -> call (or raises Refused)


@dataclass
class Starved:
    """A source must deliver at least `min_rate` of real time, measured over the time ingest waited for
    it (not the time the call held it back: backpressure is not starvation), once `grace_s` has passed."""

    min_rate: float
    grace_s: float
    waited: float = 0.0
    heard: float = 0.0

    def starving(self) -> bool:
        return self.waited > self.grace_s and self.heard < self.min_rate * self.waited


async def ingest(
    transport: Transport,
    proto: IngestProtocol,
    open_call: OpenCall,
    idle_timeout_s: float,
    starved: Starved | None = None,
) -> None:
    """Read one source until it stops, hangs up or goes silent; the call ends with what was heard."""
    call: LiveCall | None = None
    reason = "source disconnected"
    try:
        while not proto.ended:
            try:
                waiting = time.monotonic()
                message = await asyncio.wait_for(transport.recv(), idle_timeout_s)
                if starved is not None:
                    starved.waited += time.monotonic() - waiting
            except TimeoutError:
                if call is not None:
                    await call.inbox.put(SourceError(SOURCE_SILENT, f"no audio for {idle_timeout_s:.0f} s; ending the call"))
                reason = "source silent"
                break
            if starved is not None and starved.starving():
                why = f"{starved.heard:.1f} s of audio in {starved.waited:.0f} s: too little for a live call; ending it"
                await _say(transport, proto.notice(SOURCE_SILENT, why))
                if call is not None:
                    await call.inbox.put(SourceError(SOURCE_SILENT, why))
                reason = "source starved"
                break
            if message is None:
                break
            try:
                chunks = proto.feed(message)
            except ProtocolError as exc:
                await _record(call, exc.code, str(exc))
                await _say(transport, proto.problem(exc.code, str(exc)))
                chunks = []
            while proto.notices:
                code, text = proto.notices.pop(0)
                await _record(call, code, text)
                await _say(transport, proto.notice(code, text))
            while proto.outbox:
                await transport.reply(proto.outbox.pop(0))
            if call is None and proto.start is not None:
                try:
                    call = await open_call(proto.start, proto.name)
                except Refused as exc:
                    await _say(transport, proto.refused(str(exc)))
                    await transport.close(exc.code, str(exc))
                    return
                await _say(transport, proto.accepted(call.call_id))
            if starved is not None:
                starved.heard += sum(c.audio.shape[1] for c in chunks) / SAMPLE_RATE
            if chunks and call is not None:
                arrived = time.monotonic()
                for chunk in chunks:  # put waits when the call is behind: backpressure
                    if not await call.inbox.put(Audio(chunk, arrived)):
                        break
                if call.inbox.closed:  # the call ended under the source (a stage failed): say so, stop reading
                    reason = "call ended"
                    break
        if proto.ended:
            reason = "hangup"
    finally:
        if call is not None:
            if reason == "source disconnected":
                await call.inbox.put(
                    SourceError(
                        SOURCE_LOST,
                        "the source disconnected without a stop message: the call may be cut short; what was heard is kept",
                    )
                )
            await call.inbox.put(End(reason))
    if call is not None and call.task is not None and reason in ("hangup", "call ended"):
        await _report_end(transport, proto, call)


async def _report_end(transport: Transport, proto: IngestProtocol, call: LiveCall) -> None:
    """After a stop, the source learns whether everything it sent was processed and saved."""
    await asyncio.wait({call.task} if call.task else set())
    await _say(transport, proto.ended_reply(call.call_id, call.failure is None, call.failure))


async def _say(transport: Transport, message: str | None) -> None:
    if message is not None:
        await transport.reply(message)


async def _record(call: LiveCall | None, code: str, message: str) -> None:
    """A problem with the source is part of the call's record (its events, its report)."""
    if call is not None:
        await call.inbox.put(SourceError(code, message))
