"""A Genesys Cloud AudioHook client as the published protocol describes it, to check a server the way
Genesys would (`callsense stream --protocol audiohook`, the tests): it signs its connection request
(HMAC-SHA256 over the Audiohook-* headers), opens a session offering PCMU stereo (external = the
customer, internal = the agent), streams a recording in real time with pings, can pause and discard
audio as the `Script` says, answers a `disconnect` with `close`, and ends with close -> closed.
It checks the server's side too: sequence numbers, the session id, `opened` before audio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import websockets
from http_message_signatures import HTTPMessageSigner, algorithms

from callsense.audio.audiohook import NULL_UUID, ROLES, duration
from callsense.audio.files import aiter_file, probe
from callsense.service.audiohook_auth import REQUIRED, HttpMessage, SharedSecret
from callsense.service.client import Mulaw8k

RATE = 8000


@dataclass
class Script:
    """What the client does besides streaming: times are in the recording's seconds."""

    ping_every_s: float = 5.0
    pause_at_s: float | None = None  # send `paused`, withhold `pause_s` of audio, then `resumed`
    pause_s: float = 0.0
    discard_at_s: float | None = None  # drop `discard_s` of audio, then say so (`discarded`)
    discard_s: float = 0.0
    probe: bool = False  # the connection probe Genesys sends when an integration is saved
    extra: list[str] = field(default_factory=list)  # raw text messages sent right after `opened`


@dataclass
class Credentials:
    api_key: str
    secret: bytes  # the client secret, decoded
    organization_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def parse(cls, token: str) -> Credentials:
        """`API_KEY:CLIENT_SECRET` (the secret base64, as Genesys shows it)."""
        key, _, secret = token.partition(":")
        if not key or not secret:
            raise ValueError("an AudioHook token is API_KEY:CLIENT_SECRET (the secret in base64)")
        return cls(key, base64.b64decode(secret))


def signed_headers(
    url: str, creds: Credentials, session_id: str, created: datetime.datetime | None = None
) -> dict[str, str]:
    """The connection request's headers, signed as Genesys signs them (`created`: now)."""
    parts = urlsplit(url)
    headers = {
        "Audiohook-Organization-Id": creds.organization_id,
        "Audiohook-Correlation-Id": str(uuid.uuid4()),
        "Audiohook-Session-Id": session_id,
        "X-API-KEY": creds.api_key,
    }
    request = HttpMessage("GET", f"http://{parts.netloc}{parts.path}{'?' + parts.query if parts.query else ''}", headers)
    key_resolver = SharedSecret(creds.api_key, creds.secret)
    HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=key_resolver).sign(
        request,
        key_id=creds.api_key,
        covered_component_ids=REQUIRED,
        created=created or datetime.datetime.now(datetime.UTC),
        nonce=secrets.token_urlsafe(24),
    )
    return headers  # the signer added Signature-Input and Signature


class _Session:
    """One session's state: both sides' sequence numbers and what the server said."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws, self.id = ws, session_id
        self.seq = self.serverseq = 0
        self.position = 0.0
        self.opened: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()  # `closed` came, or the connection ended
        self.got_closed = False
        self.disconnect: dict[str, Any] | None = None
        self.pongs = 0
        self.errors: list[str] = []

    async def send(self, kind: str, parameters: dict[str, Any]) -> None:
        self.seq += 1
        message = {"version": "2", "id": self.id, "type": kind, "seq": self.seq, "serverseq": self.serverseq}
        await self.ws.send(json.dumps({**message, "position": duration(self.position), "parameters": parameters}))

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                self._take(json.loads(raw))
        except websockets.exceptions.ConnectionClosed as exc:
            if exc.rcvd and exc.rcvd.code != 1000:
                self.errors.append(f"closed {exc.rcvd.code}: {exc.rcvd.reason}")
        finally:
            if not self.opened.done():
                self.opened.set_exception(ConnectionError("the server closed the session before opened"))
            self.done.set()

    def _take(self, msg: dict[str, Any]) -> None:
        if msg.get("seq") != self.serverseq + 1 or msg.get("id") != self.id or msg.get("clientseq", 0) > self.seq:
            self.errors.append(f"server message out of protocol: {json.dumps(msg)[:200]}")
        self.serverseq = int(msg.get("seq", self.serverseq))
        kind, params = msg.get("type"), msg.get("parameters", {})
        if kind == "opened" and not self.opened.done():
            self.opened.set_result(params)
        elif kind == "pong":
            self.pongs += 1
        elif kind == "disconnect":
            self.disconnect = params
            self.errors.append(f"disconnect ({params.get('reason')}): {params.get('info', '')}")
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(f"disconnect before opened: {params}"))
        elif kind == "closed":
            self.got_closed = True
            self.done.set()


def _offer(roles: list[str]) -> list[dict[str, Any]]:
    """PCMU stereo when the recording has both parties on their own channels, else one channel."""
    both = {"customer", "operator"} <= set(roles)
    channels = ["external", "internal"] if both else ["external"]
    return [{"type": "audio", "format": "PCMU", "channels": channels, "rate": RATE}]


async def stream_audiohook(
    path: str | Path,
    url: str,
    creds: Credentials,
    conversation_id: str | None = None,
    roles: list[str] | None = None,
    speed: float = 1.0,
    language: str | None = None,
    script: Script | None = None,
) -> dict[str, Any]:
    """Stream `path` as one AudioHook session. Returns {"call_id" (the conversation), "errors", "clean"
    (closed answered, no disconnect), "opened" (the server's parameters), "pongs"}."""
    script = script or Script()
    info = probe(path)
    roles = (roles or (["operator", "customer"] if info.channels == 2 else ["customer"]))[: info.channels]
    conversation = NULL_UUID if script.probe else conversation_id or str(uuid.uuid4())
    session_id = str(uuid.uuid4())
    target = f"{url.rstrip('/')}/audiohook"
    result: dict[str, Any] = {"call_id": conversation, "errors": [], "clean": False, "opened": None, "pongs": 0}
    try:
        headers = signed_headers(target, creds, session_id)
        async with websockets.connect(target, additional_headers=headers, max_size=2**22, ping_timeout=None) as ws:
            session = _Session(ws, session_id)
            reader = asyncio.create_task(session.read())
            offer = _offer(roles)
            params: dict[str, Any] = {
                "organizationId": creds.organization_id,
                "conversationId": conversation,
                "participant": {"id": str(uuid.uuid4()), "ani": "", "aniName": "", "dnis": ""},
                "media": offer,
                "language": language or "en-US",
            }
            await session.send("open", params)
            try:
                result["opened"] = await asyncio.wait_for(session.opened, 120)
            except (ConnectionError, TimeoutError) as exc:
                result["errors"].append(f"not opened: {exc}")
            if result["opened"] is not None and not script.probe:
                for raw in script.extra:
                    await ws.send(raw)
                order = [roles.index(ROLES[c]) if ROLES[c] in roles else 0 for c in offer[0]["channels"]]
                with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                    await _send_audio(session, path, order, speed, script, Mulaw8k())
            if not session.done.is_set():
                with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                    await session.send("close", {"reason": "disconnect" if session.disconnect else "end"})
                await asyncio.wait_for(session.done.wait(), 600)  # the server reads the close after the audio
            await ws.close()
            await reader
            result["clean"] = session.got_closed and session.disconnect is None and not session.errors
            result["errors"] += session.errors
            result["pongs"] = session.pongs
    except (websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed, TimeoutError, OSError) as exc:
        result["errors"].append(f"the server refused the session: {exc}")
    return result


async def _send_audio(
    session: _Session, path: str | Path, order: list[int], speed: float, script: Script, mulaw: Mulaw8k
) -> None:
    """The recording in real time (`speed` x), as interleaved PCMU, with the script's pings, pause and gap."""
    gaps = sorted(
        (at, kind, length)
        for at, kind, length in (
            (script.pause_at_s, "resumed", script.pause_s),
            (script.discard_at_s, "discarded", script.discard_s),
        )
        if at is not None
    )
    withheld: tuple[str, float, float, float] | None = None  # kind, until (file time), position, length
    next_ping = script.ping_every_s
    async for chunk in aiter_file(path, chunk_ms=100, realtime=speed > 0, speed=speed or 1.0):
        if session.disconnect is not None or session.done.is_set():
            return
        t = chunk.start
        if withheld is None and gaps and t >= gaps[0][0]:
            _, kind, length = gaps.pop(0)
            if kind == "resumed":
                await session.send("paused", {})
            withheld = (kind, t + length, session.position, length)
        frames = [mulaw(ch, chunk.audio[ch]) for ch in order]  # encoded even when withheld: the stream stays whole
        if withheld is not None:
            kind, until, start, length = withheld
            if t < until:
                continue  # not sent, not counted in the position
            await session.send(kind, {"start": duration(start), "discarded": duration(length)})
            withheld = None
        n = min(len(f) for f in frames)
        await session.ws.send(np.stack([np.frombuffer(f[:n], np.uint8) for f in frames], axis=1).tobytes())
        session.position += n / RATE
        if t >= next_ping:
            await session.send("ping", {"rtt": "PT0.05S"})
            next_ping += script.ping_every_s
