"""The cluster's transport: Redis Streams between gateways (sources and consoles) and workers (calls).

Keys (all under `callsense:`):

    jobs                 stream of new calls; consumer group `workers`. A job stays pending with the
                         worker that took it until the call is saved: the worker renews its claim
                         (XCLAIM ... JUSTID) every `heartbeat_s`; a job idle for `takeover_after_s`
                         belongs to a dead worker and is taken over (XAUTOCLAIM).
    call:{id}            hash: who started the call, its roles, its worker, its checkpoint, progress
    in:{id}              the call's input, in order: audio (PCM 16 bit), feedback, source errors, the end;
                         trimmed up to each checkpoint of the worker (a takeover starts there)
    ev:{id}              the call's events; entry id `{seq}-0`, so a console resumes on any gateway
    events               every event of every call (gateways tail it); trimmed to `events_maxlen`
    live                 set of live call ids

Every stream is deleted `ended_ttl_s` after its call was saved. Redis must run without persistence
(`--save '' --appendonly no`): streams hold raw audio and unredacted events for the call's own
operator, which must not reach a disk (docs/deployment.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from callsense.audio.codecs import AudioChunk
from callsense.events import Event, parse_event
from callsense.service.calls import Audio, End, Feedback, Message, SourceError

MAX_CHANNELS = 8  # more than any call has: an entry claiming more is not one of ours

PREFIX = "callsense:"
JOBS, GROUP, EVENTS, LIVE = f"{PREFIX}jobs", "workers", f"{PREFIX}events", f"{PREFIX}live"


def connect(url: str) -> Any:
    """An asyncio client that retries a command on a dropped connection (a restarted Redis closes
    every connection in the pool: the next command must reconnect, not fail the call)."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as Disconnected

    return aredis.Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 4), retry_on_error=[Disconnected])


def connect_sync(url: str) -> Any:
    """The same for threads (the workers' heartbeat)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 4), retry_on_error=[redis.ConnectionError]
    )


def call_key(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def input_key(call_id: str) -> str:
    return f"{PREFIX}in:{call_id}"


def events_key(call_id: str) -> str:
    return f"{PREFIX}ev:{call_id}"


Entry = tuple[str, dict[bytes, bytes]]


async def read(conn: Any, streams: dict[str, str], count: int, block_ms: int) -> list[tuple[str, list[Entry]]]:
    """XREAD, typed: [(stream, [(entry id, fields)])]."""
    reply = await conn.xread(streams, count=count, block=block_ms)
    return [(text(name) or "", [(text(i) or "", f) for i, f in entries]) for name, entries in reply or []]


async def entries(conn: Any, key: str) -> list[Entry]:
    """Every entry of a stream, oldest first."""
    return [(text(i) or "", f) for i, f in await conn.xrange(key)]


def text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# --- input messages <-> stream entries ---------------------------------------------------------------


def encode_message(msg: Message) -> dict[Any, Any]:
    """One inbox message as a stream entry; audio as 16-bit PCM (what telephony sends anyway)."""
    if isinstance(msg, Audio):
        pcm = np.clip(msg.chunk.audio, -1.0, 1.0 - 1 / 32768) * 32768
        wall = time.time() - (time.monotonic() - msg.arrived)
        return {
            "k": "audio",
            "ch": str(msg.chunk.audio.shape[0]),
            "start": repr(msg.chunk.start),
            "at": repr(wall),
            "pcm": pcm.astype("<i2").T.tobytes(),
        }
    if isinstance(msg, Feedback):
        return {"k": "feedback", "hint": msg.hint_id, "action": msg.action, "by": msg.by}
    if isinstance(msg, SourceError):
        return {"k": "error", "code": msg.code, "message": msg.message}
    return {"k": "end", "reason": msg.reason}


class MalformedEntry(ValueError):
    """A call's input stream holds an entry no gateway of this version writes."""


def decode_message(fields: dict[bytes, bytes]) -> Message:
    """The inbox message of a stream entry; `MalformedEntry` for anything `encode_message` did not write."""
    try:
        return _decode(fields)
    except (KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise MalformedEntry(f"malformed input entry ({type(exc).__name__}: {exc})") from exc


def _decode(fields: dict[bytes, bytes]) -> Message:
    f = {k.decode(): v for k, v in fields.items()}
    kind = f["k"].decode()
    if kind == "audio":
        channels = int(f["ch"])
        start, at = float(f["start"]), float(f["at"])
        if not 1 <= channels <= MAX_CHANNELS or not np.isfinite([start, at]).all() or len(f["pcm"]) % (2 * channels):
            raise ValueError(f"audio entry with {channels} channels, start {start}, {len(f['pcm'])} bytes")
        pcm = np.frombuffer(f["pcm"], "<i2").reshape(-1, channels).T.astype(np.float32) / 32768
        arrived = time.monotonic() - (time.time() - at)  # this host's clock for the lag
        return Audio(AudioChunk(np.ascontiguousarray(pcm), start), arrived)
    if kind == "feedback":
        return Feedback(f["hint"].decode(), f["action"].decode(), f["by"].decode())
    if kind == "error":
        return SourceError(f["code"].decode(), f["message"].decode())
    if kind == "end":
        return End(f["reason"].decode())
    raise ValueError(f"unknown kind {kind!r}")


# --- events <-> stream entries -----------------------------------------------------------------------


def encode_event(ev: Event, redacted: Event | None) -> str:
    """An event, its redacted copy (None: for raw views only), and when its audio arrived (wall
    clock: hosts differ)."""
    arrived = ev._arrived
    wall = time.time() - (time.monotonic() - arrived) if arrived is not None else 0.0
    out: dict[str, Any] = {"c": ev.call_id, "raw": ev.model_dump(mode="json"), "at": wall, "pub": time.time()}
    if redacted is not ev:
        out["red"] = redacted.model_dump(mode="json") if redacted is not None else None
    return json.dumps(out, ensure_ascii=False)


@dataclass
class Published:
    """An event as a gateway receives it."""

    event: Event
    redacted: Event | None
    delivery_s: float  # from the worker's XADD to this read: what the broker adds


def entry_json(fields: dict[bytes, bytes]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fields[b"e"])
    return data


def raw_event(fields: dict[bytes, bytes]) -> Event:
    return parse_event(entry_json(fields)["raw"])


def decode_event(data: dict[str, Any]) -> Published:
    ev = parse_event(data["raw"])
    red = ev if "red" not in data else parse_event(data["red"]) if data["red"] is not None else None
    if data["at"]:
        arrived = time.monotonic() - (time.time() - data["at"])
        for copy in (ev, red):
            if copy is not None:
                copy.arrived_at(arrived)
    return Published(ev, red, max(time.time() - data["pub"], 0.0))


def control(call_id: str, **fields: Any) -> dict[Any, Any]:
    """A message about a call (saved, refused) on the cluster-wide event stream."""
    return {"e": json.dumps({"c": call_id, "ctl": fields})}
