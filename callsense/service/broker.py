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
    dead                 entries a process refused (bad signature, malformed): where, which, why

Nothing read from Redis is trusted: every stream entry carries an HMAC of the cluster's shared secret
(`CALLSENSE_CLUSTER_SECRET`) over its fields, and is checked against the same schemas as the wire.
An entry that fails either is logged, counted (`/metrics` › `broker_rejected`), noted on `dead`, and
skipped: never fatal to a worker, a gateway's reader or a call (docs/deployment.md).

Every stream is deleted `ended_ttl_s` after its call was saved. Redis must run without persistence
(`--save '' --appendonly no`): streams hold raw audio and unredacted events for the call's own
operator, which must not reach a disk (docs/deployment.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from callsense.audio.codecs import AudioChunk
from callsense.audio.protocols import ChannelRole, language_code, valid_call_id
from callsense.config import Settings
from callsense.events import NOTE_CHARS, Event, parse_event
from callsense.service.calls import Audio, End, Feedback, Message, Note, SourceError

log = logging.getLogger("callsense.broker")

MAX_CHANNELS = 8  # more than any call has: an entry claiming more is not one of ours

PREFIX = "callsense:"
JOBS, GROUP, EVENTS, LIVE = f"{PREFIX}jobs", "workers", f"{PREFIX}events", f"{PREFIX}live"
DEAD = f"{PREFIX}dead"
DEAD_MAXLEN = 1000
SECRET_ENV = "CALLSENSE_CLUSTER_SECRET"


def safe_url(url: str | None) -> str:
    """The broker's address for logs and messages: its password replaced by ***."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def cluster_secret(settings: Settings) -> bytes:
    """The secret every gateway and worker of a cluster shares (it signs what they write to Redis)."""
    secret = os.environ.get(SECRET_ENV) or settings.cluster.secret
    if not secret or len(secret) < 16:
        raise SystemExit(
            f"gateways and workers sign what they put on the broker with a shared secret: set {SECRET_ENV} "
            "(16 characters or more, e.g. `openssl rand -hex 32`) or cluster.secret, the same on every "
            "gateway and worker (docs/deployment.md)"
        )
    return secret.encode()


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


# --- trust: signatures, rejects ---------------------------------------------------------------------


class MalformedEntry(ValueError):
    """An entry no process of this cluster (of this version) wrote: unsigned, or not of our schemas."""


Fields = dict[Any, Any]


def _bytes(value: Any) -> bytes:
    """A field as Redis stores it (redis-py writes numbers with str())."""
    return value if isinstance(value, bytes) else str(value).encode()


class Signer:
    """HMAC-SHA256 of the cluster secret over an entry's fields, in field `s`."""

    def __init__(self, secret: bytes) -> None:
        self._key = secret

    def tag(self, fields: Fields) -> str:
        parts = []
        for k, v in sorted((_bytes(k), _bytes(v)) for k, v in fields.items() if _bytes(k) != b"s"):
            parts += [len(k).to_bytes(4, "big"), k, len(v).to_bytes(8, "big"), v]
        return hmac.new(self._key, b"".join(parts), hashlib.sha256).hexdigest()

    def sign(self, fields: Fields) -> Fields:
        return {**fields, "s": self.tag(fields)}

    def check(self, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """The entry's fields without the signature; `MalformedEntry` unless a process with our secret wrote them."""
        given = fields.get(b"s")
        if not isinstance(given, bytes) or not hmac.compare_digest(given, self.tag(fields).encode()):
            raise MalformedEntry("unsigned or wrongly signed entry: not written by a gateway or worker of this cluster")
        return {k: v for k, v in fields.items() if k != b"s"}


class Rejects:
    """Entries a process refused: counted by stream, logged (a line a second per stream at most, never
    the payload: it may hold personal data), and noted on the dead-letter stream for whoever looks."""

    def __init__(self, by: str) -> None:
        self.by = by
        self.counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def note(self, stream: str, entry_id: str, why: str) -> Fields:
        kind = stream.removeprefix(PREFIX).split(":")[0]
        self.counts[kind] += 1
        now = time.monotonic()
        if now - self._logged.get(kind, 0.0) >= 1.0:
            self._logged[kind] = now
            log.warning(
                "%s refused entry %s of %s (%d refused from %s so far): %s",
                self.by, entry_id[:40], stream[:80], self.counts[kind], kind, why[:300],
            )  # fmt: skip
        return {"stream": stream[:200], "id": entry_id[:40], "why": why[:500], "by": self.by, "at": repr(time.time())}

    async def record(self, conn: Any, stream: str, entry_id: str, why: str) -> None:
        dead = self.note(stream, entry_id, why)
        try:
            await conn.xadd(DEAD, dead, maxlen=DEAD_MAXLEN, approximate=True)
        except Exception as exc:  # the count and the log line stand; the broker may be what is failing
            log.debug("could not note a refused entry on %s: %s", DEAD, exc)


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
    if isinstance(msg, Note):
        return {"k": "note", "text": msg.text, "joining": "1" if msg.joining else "0", "by": msg.by}
    if isinstance(msg, SourceError):
        return {"k": "error", "code": msg.code, "message": msg.message}
    return {"k": "end", "reason": msg.reason}


def decode_message(fields: dict[bytes, bytes]) -> Message:
    """The inbox message of a (checked) stream entry; `MalformedEntry` for anything `encode_message` did not write."""
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
    if kind == "note":
        text = f["text"].decode()
        if not 0 < len(text) <= NOTE_CHARS or f["joining"] not in (b"0", b"1"):
            raise ValueError(f"note entry of {len(text)} characters, joining {f['joining']!r}")
        return Note(text, f["joining"] == b"1", f["by"].decode())
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


@dataclass
class Saved:
    """A worker's word that a call ended and was saved."""

    call_id: str
    clean: bool
    failure: str | None


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    c: str

    @field_validator("c")
    @classmethod
    def _call_id(cls, v: str) -> str:
        return valid_call_id(v)


class _Control(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    saved: Literal[True]
    clean: bool
    failure: str | None = Field(None, max_length=4000)


class _ControlEntry(_Entry):
    ctl: _Control


class _EventEntry(_Entry):
    raw: dict[str, Any]
    red: dict[str, Any] | None = None
    at: float = Field(ge=0, allow_inf_nan=False)
    pub: float = Field(ge=0, allow_inf_nan=False)


def _checked_json(fields: dict[bytes, bytes], signer: Signer) -> dict[str, Any]:
    body = signer.check(fields)
    if set(body) != {b"e"}:
        raise MalformedEntry(f"an event entry has one field, e; this one has {sorted(body)[:8]}")
    try:
        data = json.loads(body[b"e"])
    except (ValueError, RecursionError) as exc:
        raise MalformedEntry(f"event entry is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedEntry("event entry is not a JSON object")
    return data


def decode_entry(fields: dict[bytes, bytes], signer: Signer) -> Published | Saved:
    """An entry of `events` or `ev:{id}`, checked: signed by this cluster, of the wire's event schemas,
    both copies of one call. `MalformedEntry` otherwise."""
    data = _checked_json(fields, signer)
    try:
        if "ctl" in data:
            ctl = _ControlEntry.model_validate(data)
            return Saved(ctl.c, ctl.ctl.clean, ctl.ctl.failure)
        entry = _EventEntry.model_validate(data)
        ev = parse_event(entry.raw)
        red = ev if "red" not in entry.model_fields_set else parse_event(entry.red) if entry.red is not None else None
    except (ValidationError, ValueError) as exc:
        raise MalformedEntry(f"not an event of this version: {str(exc)[:300]}") from None
    if any(copy is not None and copy.call_id != entry.c for copy in (ev, red)):
        raise MalformedEntry(f"an event of another call under call {entry.c}")
    if entry.at:
        arrived = time.monotonic() - (time.time() - entry.at)
        for copy in (ev, red):
            if copy is not None:
                copy.arrived_at(arrived)
    return Published(ev, red, max(time.time() - entry.pub, 0.0))


def raw_event(fields: dict[bytes, bytes], signer: Signer) -> Event:
    found = decode_entry(fields, signer)
    if not isinstance(found, Published):
        raise MalformedEntry("a control entry in a call's event stream")
    return found.event


def control(call_id: str, **fields: Any) -> dict[Any, Any]:
    """A message about a call (saved, refused) on the cluster-wide event stream (sign before writing)."""
    return {"e": json.dumps({"c": call_id, "ctl": fields})}


# --- jobs and calls' hashes --------------------------------------------------------------------------


def decode_job(fields: dict[bytes, bytes], signer: Signer) -> str:
    """The call id of a (checked) job entry."""
    body = signer.check(fields)
    try:
        return valid_call_id(body[b"call"].decode())
    except (KeyError, ValueError) as exc:
        raise MalformedEntry(f"a job names one valid call id in field call ({exc})") from None


class CallMeta(BaseModel):
    """A call's hash as a gateway wrote it (and its worker extended it)."""

    model_config = ConfigDict(extra="ignore")

    protocol: str = Field(min_length=1, max_length=32)
    roles: list[ChannelRole] = Field(min_length=1, max_length=MAX_CHANNELS)
    operator: str | None = Field(None, max_length=64)
    language: str | None = None
    state: str | None = None
    worker: str | None = Field(None, max_length=200)
    ckpt: str | None = None

    @field_validator("roles", mode="before")
    @classmethod
    def _json_list(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("operator", "language", "worker", "ckpt", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return language_code(v)


def decode_meta(raw: dict[Any, Any]) -> CallMeta:
    """`MalformedEntry` for a hash no gateway wrote (missing roles, unknown roles, bad JSON...)."""
    try:
        return CallMeta.model_validate({text(k): text(v) for k, v in raw.items()})
    except (ValidationError, ValueError) as exc:
        raise MalformedEntry(f"the call's hash is malformed: {str(exc)[:300]}") from None
