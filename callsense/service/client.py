"""`callsense stream`: feed a recording to a server as a live call, in real time, over any ingest
protocol (plain, twilio, audio_fork, audiohook). Used by the demo, the load benchmark and the tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from callsense.audio.codecs import encode_mulaw
from callsense.audio.files import aiter_file, probe
from callsense.config import SAMPLE_RATE

PATHS = {"plain": "/ingest", "twilio": "/twilio", "audio_fork": "/audio_fork"}


def _s16(audio: np.ndarray) -> bytes:
    """(channels, n) float -> interleaved s16le."""
    return (np.clip(audio.T, -1, 1) * 32767).astype("<i2").tobytes()


async def stream_file(
    path: str | Path,
    url: str,
    token: str,
    protocol: str = "plain",
    roles: list[str] | None = None,
    call_id: str | None = None,
    speed: float = 1.0,
    operator_id: str | None = None,
    chunk_ms: int = 100,
    language: str | None = None,
    hold: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Send `path` as a live call (speed 0: as fast as the server takes it - backpressure, no loss).
    With `hold`, the call goes on after the file with silence in real time (the customer on hold)
    until `hold` is set: a test or demo ends the call when it is done with it.

    Returns {"call_id", "errors": [...], "clean": bool}: clean when the server confirmed that the
    call ended and was saved without a fatal error."""
    if protocol == "audiohook":  # its own session protocol: audiohook_client.py (the token is API_KEY:SECRET)
        from callsense.service.audiohook_client import Credentials, stream_audiohook

        return await stream_audiohook(path, url, Credentials.parse(token), roles=roles, speed=speed, language=language)
    info = probe(path)
    call_id = call_id or f"{Path(path).stem}-{uuid.uuid4().hex[:6]}"
    roles = (roles or (["operator", "customer"] if info.channels == 2 else ["unknown"]))[: info.channels]
    result: dict[str, Any] = {"call_id": call_id, "errors": [], "clean": False}
    target = f"{url.rstrip('/')}{PATHS[protocol]}?token={token}"
    try:
        # no keepalive timeout: while the server is behind it reads nothing, our pings' pongs included
        async with websockets.connect(target, max_size=2**22, ping_timeout=None) as ws:
            await ws.send(json.dumps(_start_message(protocol, call_id, roles, operator_id, language)))
            replies = asyncio.create_task(_read_replies(ws, result))
            mulaw = Mulaw8k()
            try:
                async for chunk in aiter_file(path, chunk_ms=chunk_ms, realtime=speed > 0, speed=speed or 1.0):
                    for message in _frames(protocol, chunk.audio, len(roles), mulaw):
                        await ws.send(message)
                if hold is not None:
                    await _on_hold(ws, hold, lambda audio: _frames(protocol, audio, len(roles), mulaw), chunk_ms, speed)
                await ws.send(json.dumps({"event": "stop"} if protocol == "twilio" else {"type": "stop"}))
            except websockets.exceptions.ConnectionClosed as exc:
                result["errors"].append(f"the server closed the stream: {_reason(exc)}")
            await replies
    except websockets.exceptions.ConnectionClosed as exc:  # refused before the first frame (token, full)
        result["errors"].append(f"the server refused the call: {_reason(exc)}")
    return result


async def _on_hold(
    ws: Any, hold: asyncio.Event, frames: Callable[[np.ndarray], list[str | bytes]], chunk_ms: int, speed: float
) -> None:
    silence = np.zeros((2, SAMPLE_RATE * chunk_ms // 1000), dtype=np.float32)
    while not hold.is_set():
        for message in frames(silence):
            await ws.send(message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hold.wait(), chunk_ms / 1000 / (speed or 1.0))


def _reason(exc: websockets.exceptions.ConnectionClosed) -> str:
    return f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else str(exc)


async def _read_replies(ws: Any, result: dict[str, Any]) -> None:
    """The server answers a source with `accepted`, `error` messages and, after the stop, `ended`."""
    try:
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "accepted":
                result["call_id"] = msg["call_id"]
            elif msg.get("type") == "error":
                result["errors"].append(f"{msg.get('code')}: {msg.get('message')}")
            elif msg.get("type") == "ended":
                result["clean"] = bool(msg.get("clean"))
                if msg.get("failure"):
                    result["errors"].append(msg["failure"])
                return
    except websockets.exceptions.ConnectionClosed as exc:
        if exc.rcvd and exc.rcvd.code != 1000:
            result["errors"].append(f"closed {exc.rcvd.code}: {exc.rcvd.reason}")


def _start_message(
    protocol: str, call_id: str, roles: list[str], operator_id: str | None, language: str | None
) -> dict[str, Any]:
    if protocol == "twilio":
        tracks = ["inbound", "outbound"] if len(roles) == 2 else ["inbound"]
        params = {k: v for k, v in (("operator_id", operator_id), ("language", language)) if v}
        return {
            "event": "start",
            "start": {
                "callSid": call_id,
                "tracks": tracks,
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
        }
    if protocol == "audio_fork":
        # mod_audio_fork stereo is caller (customer) left, callee (operator) right
        return {
            "uuid": call_id,
            "sampleRate": SAMPLE_RATE,
            "channels": len(roles),
            "roles": roles,
            "operator_id": operator_id,
            "language": language,
        }
    return {
        "type": "start",
        "call_id": call_id,
        "sample_rate": SAMPLE_RATE,
        "encoding": "s16le",
        "channels": roles,
        "operator_id": operator_id,
        "language": language,
    }


class Mulaw8k:
    """16 kHz float -> 8 kHz mu-law, as a phone network would deliver it (soxr, streaming)."""

    def __init__(self) -> None:
        import soxr

        self.streams: dict[int, Any] = {}
        self._soxr = soxr

    def __call__(self, channel: int, audio: np.ndarray) -> bytes:
        if channel not in self.streams:
            self.streams[channel] = self._soxr.ResampleStream(SAMPLE_RATE, 8000, 1, dtype="float32")
        return encode_mulaw(self.streams[channel].resample_chunk(audio.astype(np.float32)))


def _frames(protocol: str, audio: np.ndarray, channels: int, mulaw: Mulaw8k) -> list[str | bytes]:
    if protocol != "twilio":
        return [_s16(audio[:channels])]
    tracks = ["outbound", "inbound"] if channels == 2 else ["inbound"]
    out: list[str | bytes] = []
    for ch, track in enumerate(tracks):
        payload = mulaw(ch, audio[ch])
        out.append(json.dumps({"event": "media", "media": {"track": track, "payload": base64.b64encode(payload).decode()}}))
    return out
