"""`callsense serve`: one process, many live calls. Audio comes in over websockets (plain, Twilio
Media Streams, FreeSWITCH mod_audio_fork) or Asterisk AudioSocket (TCP); events go out to consoles.

- Each call is a room with a bounded replay buffer; a console resumes from its last sequence
  number per call, so a reconnect neither loses nor duplicates events.
- Each console has a bounded queue: when it falls behind, partials and metrics are dropped first
  (and the console is told); finals, emotions and hints are never dropped - a console too slow
  even for those is disconnected and can resume.
- The pipeline of each call runs in a worker thread, so a slow call never stalls the event loop,
  other calls or the consoles. Malformed frames get an `error` event and the connection stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import json
import logging
import mimetypes
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soundfile as sf
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from callsense.audio.codecs import AudioChunk
from callsense.audio.protocols import PROTOCOLS, AudioSocketParser, IngestProtocol, ProtocolError
from callsense.config import SAMPLE_RATE, Settings
from callsense.events import FINAL_TYPES, Error, Event, HintFeedback
from callsense.pipeline import CallPipeline
from callsense.registry import Models

log = logging.getLogger("callsense.service.server")
STATIC = Path(__file__).parent / "static"
DEV_TOKENS = {"dev-supervisor", "dev-operator"}
IDLE_TIMEOUT_S = 15.0


class Mailbox:
    """A FIFO for one consumer task whose waiting items its owner may take in a batch or prune
    (asyncio.Queue hides them). `maxsize` makes `put` wait: backpressure onto the sender."""

    def __init__(self, maxsize: int = 0) -> None:
        self.items: deque[Any] = deque()
        self.maxsize = maxsize
        self._ready, self._space = asyncio.Event(), asyncio.Event()

    def __len__(self) -> int:
        return len(self.items)

    async def put(self, item: Any) -> None:
        while self.maxsize and len(self.items) >= self.maxsize:
            self._space.clear()
            await self._space.wait()
        self.put_nowait(item)

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        self._ready.set()

    async def get(self) -> Any:
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        self._space.set()
        return self.items.popleft()

    def take_while(self, wanted: Callable[[Any], bool]) -> list[Any]:
        """Items from the front, as long as they are `wanted`."""
        out = []
        while self.items and wanted(self.items[0]):
            out.append(self.items.popleft())
        self._space.set()
        return out

    def keep_only(self, wanted: Callable[[Any], bool]) -> int:
        """Drop the waiting items that are not `wanted`; returns how many were dropped."""
        before = len(self.items)
        self.items = deque(item for item in self.items if wanted(item))
        self._space.set()
        return before - len(self.items)


@dataclass
class Room:
    call_id: str
    operator_id: str | None
    pipeline: CallPipeline
    replay: deque = field(default_factory=deque)
    risk: float = 0.0
    ended: bool = False
    queue: Mailbox = field(default_factory=lambda: Mailbox(maxsize=200))
    worker: asyncio.Task | None = None
    last_lag: float = 0.0
    recording: sf.SoundFile | None = None  # only when report.keep_audio is set


@dataclass(eq=False)  # identity-hashed: consoles live in a set
class Console:
    who: str
    role: str
    operator_id: str | None
    queue: Mailbox = field(default_factory=Mailbox)  # bounded by _offer
    dropped: int = 0
    too_slow: bool = False


class CallServer:
    def __init__(self, settings: Settings, models: Models | None = None) -> None:
        self.settings = settings
        self.models = models or Models(settings)
        self.rooms: dict[str, Room] = {}
        self.consoles: set[Console] = set()
        # one thread per busy call; Whisper's concurrency is bounded by the DecodeGate, not by this pool
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="call")
        self.store = None
        self._server: Server | None = None
        self._tcp: asyncio.Server | None = None
        self.finished: list[str] = []

    # -- lifecycle --

    def check_bind(self, host: str) -> None:
        dev = DEV_TOKENS & set(self.settings.server.tokens)
        if dev and not _is_loopback(host):
            raise SystemExit(f"refusing to listen on {host}: the development tokens {sorted(dev)} are configured. "
                             "Set your own tokens in the config's server.tokens, or use 127.0.0.1.")

    async def start(self, host: str | None = None, port: int | None = None, audiosocket_port: int | None = None) -> int:
        from callsense.reports.store import Store

        s = self.settings.server
        host = host or s.host
        self.check_bind(host)
        self.store = Store(s.store)
        self._purge()
        await asyncio.get_running_loop().run_in_executor(self.executor, self.models.warm)
        tls = None
        if s.certfile:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(s.certfile, s.keyfile)
        self._server = await serve(self._handle, host, s.port if port is None else port, ssl=tls,
                                   process_request=self._http, max_size=s.max_message_bytes, ping_interval=20)
        if audiosocket_port is not None:
            self._tcp = await asyncio.start_server(self._audiosocket, host, audiosocket_port)
        return self._server.sockets[0].getsockname()[1] if self._server.sockets else 0

    def _purge(self) -> None:
        """Retention: results older than report.retention_days go, with their reports and audio."""
        import shutil

        assert self.store is not None
        root = Path(self.settings.server.store).parent
        for call_id in self.store.purge_older_than(self.settings.report.retention_days):
            shutil.rmtree(root / "reports" / call_id, ignore_errors=True)
            (root / "audio" / f"{call_id}.flac").unlink(missing_ok=True)

    @property
    def audiosocket_port(self) -> int | None:
        return self._tcp.sockets[0].getsockname()[1] if self._tcp and self._tcp.sockets else None

    async def shutdown(self) -> None:
        """Stop taking calls, finish and persist the ones in flight, then close."""
        if self._server:
            self._server.close(close_connections=False)
        if self._tcp:
            self._tcp.close()
        for room in list(self.rooms.values()):
            if not room.ended:
                await room.queue.put(("end", "server shutdown"))
        for room in list(self.rooms.values()):
            if room.worker:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(room.worker, 60)
        if self._server:
            # close() was already called (it only works once): close the remaining consoles ourselves
            for conn in list(self._server.connections):
                await conn.close(1001, "server shutting down; reconnect and resume")
            await self._server.wait_closed()
        self.executor.shutdown(wait=True)

    # -- http: health, metrics, static dashboard --

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in ("/console", "/ingest", "/twilio", "/audio_fork"):
            return None
        if path == "/health":
            return _json_response({"status": "ok", "calls": sum(not r.ended for r in self.rooms.values()),
                                   "consoles": len(self.consoles)})
        if path == "/metrics":
            return _json_response({"calls": [
                {"call_id": r.call_id, "operator_id": r.operator_id, "lag_s": r.last_lag, "risk": r.risk,
                 "ended": r.ended, "stream_s": round(r.pipeline.stream_time, 1)} for r in self.rooms.values()
            ], "consoles": len(self.consoles), "dropped_partials": sum(c.dropped for c in self.consoles)})
        name = "index.html" if path in ("/", "") else path.lstrip("/").removeprefix("static/")
        file = (STATIC / name).resolve()
        if STATIC.resolve() in file.parents and file.is_file():
            ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            return Response(200, "OK", Headers({"Content-Type": ctype}), file.read_bytes())
        return Response(404, "Not Found", Headers({"Content-Type": "text/plain"}), b"not found\n")

    # -- websocket routing --

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        token = query.get("token") or _bearer(ws.request.headers)
        grant = self.settings.server.tokens.get(token or "")
        if grant is None:
            await ws.close(4001, "invalid or missing token: pass ?token=... or an Authorization: Bearer header")
            return
        if url.path == "/console":
            await self._console(ws, grant, token or "", query.get("call"))
        else:
            protocol = {"/ingest": "plain", "/twilio": "twilio", "/audio_fork": "audio_fork"}[url.path]
            await self._ingest(ws, PROTOCOLS[protocol](), grant)

    # -- ingest --

    async def _ingest(self, ws: ServerConnection, proto: IngestProtocol, grant: dict[str, str]) -> None:
        room: Room | None = None
        bucket = _RateLimit(self.settings.server.max_messages_per_s)
        try:
            while not proto.ended:
                try:
                    message = await asyncio.wait_for(ws.recv(), IDLE_TIMEOUT_S)
                except TimeoutError:
                    if room:
                        await self._publish(room, [room.pipeline.seq.stamp(Error(
                            code="source_silent", message=f"no audio for {IDLE_TIMEOUT_S:.0f} s; ending the call"))])
                    break
                if not bucket.allow():
                    await ws.send(_error_json("rate_limited", "too many messages; this one was dropped"))
                    continue
                try:
                    chunks = proto.feed(message)
                except (ProtocolError, ValueError) as exc:
                    await ws.send(_error_json("bad_frame", str(exc)))
                    if room:
                        await self._publish(room, [room.pipeline.seq.stamp(Error(code="bad_frame", message=str(exc)))])
                    continue
                if room is None and proto.start is not None:
                    room = await self._open_room(proto, grant)
                    await ws.send(json.dumps({"type": "accepted", "call_id": room.call_id}))
                for chunk in chunks:
                    assert room is not None
                    await room.queue.put(("audio", chunk, time.monotonic()))
        except ConnectionClosed:
            pass  # a source that hangs up without `stop`: the call ends with what was heard
        finally:
            if room is not None:
                await room.queue.put(("end", "hangup" if proto.ended else "source disconnected"))

    async def _open_room(self, proto: IngestProtocol, grant: dict[str, str]) -> Room:
        start = proto.start
        assert start is not None
        call_id = start.call_id if start.call_id not in self.rooms else f"{start.call_id}-{uuid.uuid4().hex[:4]}"
        operator_id = start.operator_id or grant.get("operator_id")
        loop = asyncio.get_running_loop()
        pipe = await loop.run_in_executor(self.executor, lambda: CallPipeline(
            self.settings, self.models, start.roles, call_id=call_id, operator_id=operator_id,
            language=start.language, source=proto.name))
        room = Room(call_id, operator_id, pipe, replay=deque(maxlen=self.settings.server.replay_events))
        if self.settings.report.keep_audio:
            path = Path(self.settings.server.store).parent / "audio" / f"{call_id}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            room.recording = sf.SoundFile(path, "w", SAMPLE_RATE, len(start.roles), format="FLAC")
        self.rooms[call_id] = room
        await self._publish(room, pipe.start())
        room.worker = asyncio.create_task(self._run_room(room))
        return room

    async def _run_room(self, room: Room) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await room.queue.get()
            if item[0] == "end":
                events = await loop.run_in_executor(self.executor, room.pipeline.finish, item[1])
                await self._publish(room, events)
                break
            arrived = item[2]
            # batch what queued up meanwhile: fewer, larger steps when the call falls behind
            chunks: list[AudioChunk] = [item[1]] + [nxt[1] for nxt in room.queue.take_while(lambda i: i[0] == "audio")]
            merged = AudioChunk(np.concatenate([c.audio for c in chunks], axis=1), chunks[0].start)
            if room.recording is not None:
                room.recording.write(merged.audio.T)
            events = await loop.run_in_executor(self.executor, room.pipeline.push, merged, arrived)
            await self._publish(room, events)
        room.ended = True
        if room.recording is not None:
            room.recording.close()
        await loop.run_in_executor(self.executor, self._persist, room)

    def _persist(self, room: Room) -> None:
        from callsense.reports.report import build_report, write_report

        events = list(room.pipeline.events)
        out = Path(self.settings.server.store).parent / "reports" / room.call_id
        try:
            write_report(events, out, self.settings, source=room.pipeline.source)
            report = build_report(events, self.settings, room.pipeline.source)
            if self.store:
                self.store.save_call(room.call_id, events, report, source=room.pipeline.source,
                                     operator_id=room.operator_id)
        except Exception as exc:  # persisting must not take the server down
            log.exception("could not persist call %s: %s", room.call_id, exc)
        self.finished.append(room.call_id)

    async def _publish(self, room: Room, events: list[Event]) -> None:
        for ev in events:
            room.replay.append(ev)
            if ev.type == "metrics":
                room.last_lag = ev.lag_s
            elif ev.type == "emotion" and ev.role == "customer":
                room.risk = round(max(0.0, -ev.valence) + max(0.0, ev.arousal), 3)
            elif ev.type == "hint":
                room.risk += {"critical": 1.0, "warning": 0.3}.get(ev.severity, 0.0)
            for console in list(self.consoles):
                if self._may_see(console, room):
                    self._offer(console, ev)

    # -- consoles --

    def _may_see(self, console: Console, room: Room) -> bool:
        return console.role == "supervisor" or (console.operator_id is not None and console.operator_id == room.operator_id)

    def _offer(self, console: Console, ev: Event) -> None:
        q, limit = console.queue, self.settings.server.console_queue
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

    async def _console(self, ws: ServerConnection, grant: dict[str, str], token: str, call: str | None) -> None:
        console = Console(who=f"{grant.get('role')}:{grant.get('operator_id', token[:6])}", role=grant.get("role", ""),
                          operator_id=grant.get("operator_id"))
        after: dict[str, int] = {}
        with contextlib.suppress(TimeoutError, ConnectionClosed, json.JSONDecodeError):
            first = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            if first.get("type") == "resume":
                after = {str(k): int(v) for k, v in (first.get("after") or {}).items()}
        # replay before going live; events published meanwhile wait in the queue (dedup by seq)
        self.consoles.add(console)
        sent: dict[str, int] = dict(after)
        try:
            for room in list(self.rooms.values()):
                if self._may_see(console, room) and (call is None or room.call_id == call):
                    if self.store:
                        self.store.log_access(console.who, room.call_id, "console view")
                    for ev in list(room.replay):
                        if ev.seq > sent.get(ev.call_id, 0):
                            await ws.send(ev.model_dump_json())
                            sent[ev.call_id] = ev.seq
            tasks = [asyncio.create_task(self._console_send(ws, console, sent, call)),
                     asyncio.create_task(self._console_recv(ws, console))]
            # whichever side ends first (client gone, too slow, server closing) ends the other
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() and not isinstance(task.exception(), ConnectionClosed):
                    raise task.exception()  # type: ignore[misc]
        except ConnectionClosed:
            pass
        finally:
            self.consoles.discard(console)

    async def _console_send(self, ws: ServerConnection, console: Console, sent: dict[str, int], call: str | None) -> None:
        reported = 0
        while True:
            ev = await console.queue.get()
            if ev is None:
                await ws.close(4008, "console too slow: reconnect and resume from your last sequence number")
                return
            if call is not None and ev.call_id != call or ev.seq <= sent.get(ev.call_id, 0):
                continue
            if console.dropped > reported:
                await ws.send(json.dumps({"type": "notice", "message":
                                          f"{console.dropped - reported} partial updates skipped (console behind)"}))
                reported = console.dropped
            await ws.send(ev.model_dump_json())
            sent[ev.call_id] = ev.seq

    async def _console_recv(self, ws: ServerConnection, console: Console) -> None:
        async for message in ws:
            try:
                data = json.loads(message)
                room = self.rooms[str(data["call_id"])]
                if not self._may_see(console, room):
                    raise KeyError(data["call_id"])
                if data.get("type") != "feedback" or data.get("action") not in ("accepted", "dismissed"):
                    raise ValueError("expected {type: feedback, call_id, hint_id, action: accepted|dismissed}")
                fb = room.pipeline.seq.stamp(HintFeedback(hint_id=str(data["hint_id"]), action=data["action"],
                                                         by=console.who))
                fb.t = round(room.pipeline.stream_time, 3)
                room.pipeline.events.append(fb)
                await self._publish(room, [fb])
            except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
                await ws.send(_error_json("bad_message", f"could not use that message: {exc}"))

    # -- Asterisk AudioSocket (TCP) --

    async def _audiosocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = AudioSocketParser()
        room: Room | None = None
        try:
            while not parser.ended:
                data = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT_S)
                if not data:
                    break
                try:
                    chunks = parser.feed(data)
                except ProtocolError as exc:
                    log.warning("audiosocket: %s", exc)
                    writer.write(AudioSocketParser.frame(AudioSocketParser.ERROR, str(exc).encode()[:255]))
                    break
                if room is None and parser.uuid:
                    from callsense.audio.protocols import PlainProtocol, StreamStart

                    proto = PlainProtocol()
                    proto.start = StreamStart(parser.uuid, 8000, "s16le", ["unknown"])
                    proto.name = "audiosocket"  # type: ignore[misc]
                    room = await self._open_room(proto, {})
                for chunk in chunks:
                    if room is not None:
                        await room.queue.put(("audio", chunk, time.monotonic()))
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if room is not None:
                await room.queue.put(("end", "hangup" if parser.ended else "source disconnected"))
            writer.close()


class _RateLimit:
    def __init__(self, per_s: float) -> None:
        self.rate, self.tokens, self.last = per_s, per_s, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _bearer(headers: Headers) -> str | None:
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("X-Callsense-Token")


def _error_json(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def _json_response(data: Any) -> Response:
    body = json.dumps(data).encode()
    return Response(http.HTTPStatus.OK, "OK", Headers({"Content-Type": "application/json"}), body)


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
