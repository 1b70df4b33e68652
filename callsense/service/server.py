"""`callsense serve`: one process, many live calls, built from parts with one job each.

    ingest (ingest.py)  every source protocol -> the call's inbox (backpressure, validated frames)
    calls (calls.py)    one worker per call: the only writer of its events; persisted as they happen
    fan-out (fanout.py) events -> consoles, with resume; ended calls leave memory after a window
    http (http.py)      /health, /metrics (token), the dashboard

This module wires them: tokens and identity (a call's operator comes from its token), admission
(at most `max_calls` live calls), start-up recovery of calls a killed process left, and a shutdown
bounded by `shutdown_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request

from callsense.audio.audiohook import AudioHookProtocol
from callsense.audio.protocols import PROTOCOLS, AudioSocketProtocol, IngestProtocol, ProtocolLimits, StreamStart
from callsense.config import Settings, TokenGrant
from callsense.pipeline import CallPipeline, warm_up
from callsense.registry import Models
from callsense.reports.store import Store
from callsense.service.audiohook_auth import AudioHookAuth
from callsense.service.calls import (
    PURGE_EVERY_S,
    Call,
    FromConsole,
    LiveCall,
    call_executor,
    purge_expired,
    recover_interrupted,
    sweep_retention,
)
from callsense.service.fanout import FanOut
from callsense.service.http import Http, grant_in, operators_of, token_of, who_of
from callsense.service.ingest import Refused, Starved, TcpTransport, WebsocketTransport, ingest

log = logging.getLogger("callsense.server")
DEV_TOKENS = {"dev-supervisor", "dev-operator"}
INGEST_PATHS = {"/ingest": "plain", "/twilio": "twilio", "/audio_fork": "audio_fork"}


class CallServer:
    def __init__(self, settings: Settings, models: Models | None = None) -> None:
        self.settings = settings
        self.models = models or Models(settings)
        self.calls: dict[str, LiveCall] = {}
        self.executor = call_executor()
        self.store: Store | None = None
        # with redact_pii off, supervisors see what the disk holds: raw
        self.fanout = FanOut(
            settings.server, None, self._from_console, settings.report.redact_operator_view, settings.report.redact_pii
        )
        self.limits = ProtocolLimits(settings.server.max_channels, settings.server.max_frame_s)
        self.audiohook = AudioHookAuth(settings.server.audiohook)
        self.finished: list[str] = []
        self._server: Server | None = None
        self._tcp: asyncio.Server | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle --

    def check_bind(self, host: str) -> None:
        dev = DEV_TOKENS & set(self.settings.server.tokens)
        if dev and not _is_loopback(host):
            raise SystemExit(
                f"refusing to listen on {host}: the development tokens {sorted(dev)} are configured. "
                "Set your own tokens in the config's server.tokens, or use 127.0.0.1."
            )

    async def start(self, host: str | None = None, port: int | None = None, audiosocket_port: int | None = None) -> int:
        s = self.settings.server
        host = host or s.host
        self.check_bind(host)
        # before a minute of model loading: a port another program holds is said at once
        _port_free(host, s.port if port is None else port, "--port")
        if audiosocket_port:
            _port_free(host, audiosocket_port, "--audiosocket-port")
        self.store = self.fanout.store = Store(s.store)
        await self._prepare()
        tls = None
        if s.certfile:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(s.certfile, s.keyfile)
        http = self._http()
        self._server = await serve(
            self._route,
            host,
            s.port if port is None else port,
            ssl=tls,
            process_request=http,
            max_size=s.max_message_bytes,
            # Pings keep NATs and proxies open, but a missing pong never closes a connection: while a call is
            # behind, its socket is not read (backpressure), so the source's pong (and its own pings) wait
            # unread; a keepalive timeout then cut calls that were only slow (1011, the rest of the audio lost).
            # A source that is really gone is found by the idle timeout once the call has caught up.
            ping_interval=s.ping_interval_s,
            ping_timeout=None,
        )
        if audiosocket_port is not None:
            self._tcp = await asyncio.start_server(self._audiosocket, host, audiosocket_port)
        return self._server.sockets[0].getsockname()[1] if self._server.sockets else 0

    async def _prepare(self) -> None:
        """Before taking calls: calls a killed process left, retention, the models."""
        assert self.store is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, recover_interrupted, self.settings, self.store)
        await loop.run_in_executor(self.executor, purge_expired, self.settings, self.store)
        await loop.run_in_executor(self.executor, warm_up, self.models, self.settings)
        self._sweep = asyncio.create_task(
            sweep_retention(self.settings, self.store, self.executor, first_after_s=PURGE_EVERY_S)
        )

    @property
    def audiosocket_port(self) -> int | None:
        return self._tcp.sockets[0].getsockname()[1] if self._tcp and self._tcp.sockets else None

    async def shutdown(self) -> int:
        """Stop taking calls, let the ones in flight finish for up to `shutdown_timeout_s`, then end the
        rest as interrupted (with what they had), and close. Returns how many calls ended so."""
        self._closing = True
        if self._sweep is not None:
            self._sweep.cancel()
        if self._server:
            self._server.close(close_connections=False)
        if self._tcp:
            self._tcp.close()
        from callsense.service.calls import End

        live = [c for c in self.calls.values() if not c.ended]
        for call in live:
            call.inbox.put_nowait(End("server shutdown"))  # past the bound: shutdown must not wait for space
        tasks = [c.task for c in live if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.server.shutdown_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        interrupted = len(pending) if tasks else 0
        if self._server:
            # close() was already called (it only works once): close the remaining consoles ourselves
            for conn in list(self._server.connections):
                await conn.close(1001, "server shutting down; reconnect and resume")
            await self._server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()
        return interrupted

    # -- identity --

    def grant(self, token: str | None) -> TokenGrant | None:
        return grant_in(self.settings, token)

    def _operator_for(self, grant: TokenGrant | None, asked: str | None) -> str | None:
        """Whose call this is: bound to the token, never taken from the client's JSON alone."""
        if grant is None:  # AudioSocket: peers are allow-listed, calls belong to the configured operator
            return self.settings.server.audiosocket_operator
        if grant.role == "supervisor":
            return asked
        allowed = operators_of(grant) or set()
        if asked is None or asked in allowed:
            return asked or grant.operator_id
        raise Refused(4003, f"this token may not start calls for operator {asked[:64]!r}")

    def _unique_id(self, wanted: str) -> str:
        """A second call with a live or stored id (Twilio reuses callSids) gets a distinct id, never merged."""
        taken = wanted in self.calls or (self.store is not None and self.store.known(wanted))
        return f"{wanted[:55]}-{uuid.uuid4().hex[:8]}" if taken else wanted

    # -- calls --

    async def _open_call(self, start: StreamStart, protocol: str, grant: TokenGrant | None) -> LiveCall:
        if self._closing:
            raise Refused(1001, "server shutting down; try another server")
        live = sum(not c.ended for c in self.calls.values())
        if live >= self.settings.server.max_calls:
            raise Refused(1013, f"server full: {live} live calls (server.max_calls); try again later")
        operator_id = self._operator_for(grant, start.operator_id)
        call_id = self._unique_id(start.call_id)
        pipe = CallPipeline(
            self.settings,
            self.models,
            start.roles,
            call_id=call_id,
            operator_id=operator_id,
            language=start.language,
            source=protocol,
        )
        call = Call(call_id, operator_id, protocol, pipe, self.settings, self.store, self.executor, self.fanout.publish)
        self.calls[call_id] = call  # reserved before any await: two starts with one id cannot both get it
        self.fanout.open(call_id, operator_id)
        assert self.store is not None
        self.store.open_call(call_id, protocol, operator_id)
        call.task = asyncio.create_task(self._run(call))
        return call

    async def _run(self, call: Call) -> None:
        try:
            await call.work()
        finally:
            self.calls.pop(call.call_id, None)  # the fan-out keeps what consoles may resume, for a while
            self.finished.append(call.call_id)
            del self.finished[:-1000]

    async def _from_console(self, call_id: str, msg: FromConsole) -> bool:
        """An operator's feedback or a supervisor's note, into the call's inbox (its worker records it)."""
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return False
        await call.inbox.put(msg)
        return True

    # -- websocket routing --

    async def _route(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # set once the handshake is done
        url = urlsplit(ws.request.path)
        if url.path == "/audiohook":  # its signature was checked before the upgrade (Http)
            await self._ingest(ws, self.audiohook.grant(ws.request), _audiohook(ws.request, self.limits))
            return
        token = token_of(ws.request)
        grant = self.grant(token)
        if grant is None:
            await ws.close(4001, "invalid or missing token: pass ?token=... or an Authorization: Bearer header")
            return
        if url.path == "/console":
            follow = parse_qs(url.query).get("call", [None])[0]
            who = who_of(grant, token)
            await self.fanout.serve(ws, grant, who, follow)
            return
        if grant.role == "operator" and grant.operator_id is None:
            await ws.close(4003, "this operator token is bound to no operator_id; it cannot stream calls")
            return
        await self._ingest(ws, grant, PROTOCOLS[INGEST_PATHS[url.path]](self.limits))

    async def _ingest(self, ws: ServerConnection, grant: TokenGrant | None, proto: IngestProtocol) -> None:
        if grant is None:
            await ws.close(4001, "no grant for this source")
            return

        async def open_call(start: StreamStart, name: str) -> LiveCall:
            return await self._open_call(start, name, grant)

        await ingest(WebsocketTransport(ws), proto, open_call, self.settings.server.idle_timeout_s)

    async def _audiosocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = TcpTransport(reader, writer)
        if not self._peer_allowed(transport.peer):
            await transport.close(0, f"peer {transport.peer} is not in server.audiosocket_peers")
            return

        async def open_call(start: StreamStart, name: str) -> LiveCall:
            return await self._open_call(start, name, None)

        try:
            cfg = self.settings.server
            starved = Starved(cfg.audiosocket_min_rate, cfg.audiosocket_grace_s)
            await ingest(transport, AudioSocketProtocol(self.limits), open_call, cfg.idle_timeout_s, starved)
        finally:
            writer.close()

    def _peer_allowed(self, peer: str) -> bool:
        if _is_loopback(peer):
            return True
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(peer)
            return any(address in ipaddress.ip_network(net, strict=False) for net in self.settings.server.audiosocket_peers)
        return False

    # -- health and metrics --

    def _http(self) -> Any:
        """What answers plain HTTP on the port (health, metrics, the dashboard, recent calls and reports)."""
        return Http(self.grant, self._health, self._metrics, lambda: self.store, audiohook=self.audiohook.check)

    def _health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "calls": sum(not c.ended for c in self.calls.values()),
            "consoles": len(self.fanout.consoles),
        }

    def _metrics(self) -> dict[str, Any]:
        rooms = {r.call_id: r for r in self.fanout.live()}
        return {
            "calls": [
                {
                    "call_id": c.call_id,
                    "operator_id": c.operator_id,
                    "lag_s": c.last_lag,
                    "stream_s": round(c.stream_time, 1),
                    "risk": rooms[c.call_id].risk if c.call_id in rooms else None,
                    "queued_frames": len(c.inbox),
                }
                for c in self.calls.values()
                if not c.ended
            ],
            "consoles": len(self.fanout.consoles),
            "rooms_in_memory": len(self.fanout.rooms),
            "dropped_partials": sum(c.dropped for c in self.fanout.consoles),
            "optional_decodes_skipped": self.models.decode_gate.skipped if self.models.loaded("decode_gate") else 0,
            "revision_packs": self.models.revisions.as_dict(),
        }


def _audiohook(request: Request, limits: ProtocolLimits) -> AudioHookProtocol:
    headers = request.headers
    return AudioHookProtocol(
        limits, session_id=headers.get("Audiohook-Session-Id"), organization_id=headers.get("Audiohook-Organization-Id")
    )


def _port_free(host: str, port: int, option: str) -> None:
    """SystemExit with what to do when `port` cannot be bound (0 = any free port: nothing to check)."""
    import errno
    import socket

    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}: {exc.strerror or exc}; pass an address of this machine") from exc
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(
                    f"port {port} on {host} is in use (another callsense server?): stop it or pass {option} with a free port"
                ) from exc
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
