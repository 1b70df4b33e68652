"""Property-based fuzzing (hypothesis) of every inbound message type of every protocol.

Frames are built from each message's real shape with any field swapped for a wrong type, a
non-finite number, a huge value or garbage. The property: a parser either uses the message or
raises `ProtocolError` (which the server answers with an `error` and keeps the connection) - never
any other exception, which would be a 1011 close. The last test sends such frames to a real server
over loopback and checks that no connection is closed with 1011 and that the server stays healthy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callsense.audio.audiohook import AudioHookProtocol
from callsense.audio.protocols import (
    AudioForkProtocol,
    AudioSocketProtocol,
    IngestProtocol,
    PlainProtocol,
    ProtocolError,
    TwilioProtocol,
)
from callsense.config import ServerSettings
from callsense.service.disputes import DecisionMessage, DisputeMessage
from callsense.service.fanout import INPUT, FanOut, ResumeMessage

EXAMPLES = 300  # per message type: bounded so `make test` stays quick

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.binary(max_size=40).map(lambda b: b.hex()),
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    st.just("ru-RU"),
    st.just("../../x"),
    st.just(""),
    st.just("x" * 5000),
)


def mutate(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The real message, with some of its fields (nested ones too) replaced, dropped or added."""

    def vary(value: Any) -> st.SearchStrategy[Any]:
        if isinstance(value, dict):
            return st.fixed_dictionaries({k: st.one_of(vary(v), junk) for k, v in value.items()})
        return st.one_of(st.just(value), junk)

    return st.tuples(
        vary(base),
        st.dictionaries(st.text(max_size=10), junk, max_size=2),
        st.lists(st.sampled_from(sorted(base)), max_size=2),
    ).map(lambda t: {**{k: v for k, v in t[0].items() if k not in t[2]}, **t[1]})


def dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=True)


PLAIN_START = {
    "type": "start",
    "call_id": "c1",
    "sample_rate": 8000,
    "encoding": "mulaw",
    "channels": ["customer"],
    "operator_id": "op-1",
    "language": "ru",
}
TWILIO_START = {
    "event": "start",
    "streamSid": "MZ1",
    "start": {
        "callSid": "CA1",
        "tracks": ["inbound", "outbound"],
        "customParameters": {"operator_id": "op-1", "language": "en"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}
TWILIO_MEDIA = {"event": "media", "media": {"track": "inbound", "payload": base64.b64encode(b"\x7f" * 160).decode()}}
AH_SESSION, AH_ORG = "6a4b1c2d-0000-4000-8000-00000000000a", "6a4b1c2d-0000-4000-8000-00000000000b"


def _ah(kind: str, seq: int, parameters: dict[str, Any]) -> dict[str, Any]:
    """An AudioHook client message (docs/protocol.md)."""
    common = {"version": "2", "id": AH_SESSION, "seq": seq, "serverseq": 0, "position": "PT1.5S"}
    return {**common, "type": kind, "parameters": parameters}


AH_MEDIA = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
AH_OPEN = _ah(
    "open",
    1,
    {
        "organizationId": AH_ORG,
        "conversationId": "6a4b1c2d-0000-4000-8000-00000000000c",
        "participant": {"id": AH_ORG, "ani": "+15551234", "aniName": "x", "dnis": "+1800"},
        "media": [AH_MEDIA],
        "language": "en-US",
        "customConfig": {"operator_id": "op-1"},
    },
)
AH_GAP = _ah("discarded", 3, {"start": "PT1S", "discarded": "PT0.5S"})
FORK_START = {"uuid": "u1", "sampleRate": 16000, "channels": 2, "roles": ["customer", "operator"], "language": "ru"}


def _feed_ok(proto: IngestProtocol, message: str | bytes) -> None:
    try:
        chunks = proto.feed(message)
    except ProtocolError:
        return
    for chunk in chunks:
        assert chunk.audio.ndim == 2 and bool(abs(chunk.audio).max(initial=0) <= 1.0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(start=mutate(PLAIN_START), audio=st.binary(max_size=2000), stop=mutate({"type": "stop"}))
def test_plain_frames(start, audio, stop):
    p = PlainProtocol()
    for message in (dumps(start), audio, dumps(stop)):
        _feed_ok(p, message)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    start=mutate(TWILIO_START),
    media=mutate(TWILIO_MEDIA),
    other=mutate({"event": "mark", "mark": {"name": "x"}})
    | mutate({"event": "dtmf", "dtmf": {"digit": "1"}})
    | mutate({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
)
def test_twilio_frames(start, media, other):
    p = TwilioProtocol()
    for message in (dumps(other), dumps(start), dumps(media), dumps(TWILIO_MEDIA), dumps({"event": "stop"})):
        _feed_ok(p, message)


@settings(max_examples=EXAMPLES, deadline=None)
@given(start=mutate(FORK_START), audio=st.binary(max_size=2000), other=mutate({"type": "hangup"}))
def test_audio_fork_frames(start, audio, other):
    p = AudioForkProtocol()
    for message in (dumps(start), audio, dumps(other)):
        _feed_ok(p, message)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    opening=mutate(AH_OPEN),
    ping=mutate(_ah("ping", 2, {"rtt": "PT0.1S"})),
    gap=mutate(AH_GAP) | mutate(_ah("resumed", 3, {"start": "PT1S", "discarded": "PT2S"})),
    other=mutate(_ah("update", 4, {"language": "ru-RU"})) | mutate(_ah("error", 4, {"code": 500, "message": "x"})),
    audio=st.binary(max_size=2000),
    close=mutate(_ah("close", 5, {"reason": "end"})),
)
def test_audiohook_messages(opening, ping, gap, other, audio, close):
    p = AudioHookProtocol(session_id=AH_SESSION)
    for message in (dumps(opening), audio, dumps(ping), dumps(gap), audio, dumps(other), dumps(close)):
        _feed_ok(p, message)
        if p.start is not None and p.state == "opening":
            assert json.loads(p.accepted("c1") or "")["type"] == "opened"
        for reply in p.outbox:  # whatever came in, what goes out is a well-formed server message
            assert {"version", "type", "seq", "clientseq", "id", "parameters"} <= set(json.loads(reply))


@settings(max_examples=EXAMPLES, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=700)), max_size=8), cut=st.integers(1, 50))
def test_audiosocket_frames_of_any_kind(frames, cut):
    """Any kinds (DTMF 0x03 and unknown ones included), any payloads, any TCP segmentation."""
    p = AudioSocketProtocol()
    stream = AudioSocketProtocol.frame(0x01, bytes(16)) + b"".join(AudioSocketProtocol.frame(k, b) for k, b in frames)
    for i in range(0, len(stream), cut):
        _feed_ok(p, stream[i : i + cut])
    assert all(
        code in ("bad_frame", "unknown_frame", "frame_too_large", "duplicate_start", "not_started") for code, _ in p.notices
    )


@settings(max_examples=EXAMPLES, deadline=None)
@given(float_frame=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=400))
def test_float_audio_with_nan_and_inf_is_repaired_not_lost(float_frame):
    import numpy as np

    p = PlainProtocol()
    p.feed(dumps({**PLAIN_START, "encoding": "f32le", "sample_rate": 16000}))
    chunks = p.feed(np.asarray(float_frame, "<f4").tobytes())
    assert sum(c.audio.shape[1] for c in chunks) == len(float_frame), "every sample is kept (16 kHz in, 16 kHz out)"
    bad = sum(not math.isfinite(x) for x in float_frame)
    assert [c for c, _ in p.notices] == (["non_finite_samples"] if bad else [])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resume=mutate({"type": "resume", "after": {"c1": 3}}),
    feedback=mutate({"type": "feedback", "call_id": "c1", "hint_id": "h1", "action": "accepted"}),
    note=mutate({"type": "note", "call_id": "c1", "text": "offer the fee refund", "joining": False}),
    summary=mutate({"type": "summary", "call_id": "c1"}),
    raw=st.text(max_size=200) | st.binary(max_size=200),
)
def test_console_messages(resume, feedback, note, summary, raw):
    fanout = FanOut(ServerSettings(), None, on_input=None)  # type: ignore[arg-type]
    for message, model in (
        (dumps(resume), ResumeMessage),
        (dumps(feedback), INPUT),
        (dumps(note), INPUT),
        (dumps(summary), INPUT),
        (raw, ResumeMessage),
        (raw, INPUT),
    ):
        with contextlib.suppress(ValueError):
            fanout._parse(message, model)


# a third of the examples: each opens a real SQLite store
@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dispute=mutate({"type": "dispute", "call_id": "c1", "item": "greeting", "comment": "I did greet"}),
    decision=mutate({"type": "dispute_decision", "dispute_id": 1, "outcome": "accepted", "comment": "agreed"}),
    role=st.sampled_from(["operator", "supervisor"]),
)
def test_disputes_from_any_console_are_answered_or_refused(tmp_path, dispute, decision, role):
    """Mutated disputes and decisions against a real store: a stored row or a ValueError (said to the
    console as bad_message), nothing else; an operator never decides, a dispute never lands on another's call."""
    from callsense.reports.store import Store
    from callsense.service.fanout import Console

    store = Store(tmp_path / f"{role}.sqlite")
    report = {"language": "en", "metrics": {"duration_s": 1.0}, "compliance": [{"id": "greeting", "title": "G"}]}
    store.save_call("c1", [], report, operator_id="op-1")
    fanout = FanOut(ServerSettings(), store, on_input=None)  # type: ignore[arg-type]
    console = Console(f"{role}:x", role, "op-1" if role == "operator" else None)
    for message in (dumps(dispute), dumps(decision)):
        with contextlib.suppress(ValueError):
            parsed = fanout._parse(message, INPUT)
            if isinstance(parsed, DisputeMessage | DecisionMessage):  # as the console's receive loop routes it
                answer = json.loads(fanout._dispute(console, parsed))
                assert answer["type"] == "dispute" and answer["call_id"] == "c1"
    rows = store.disputes()
    assert all(r["operator_id"] == "op-1" for r in rows)
    assert role == "supervisor" or all(r["decided_by"] is None for r in rows)
    store.close()


@pytest.mark.slow
def test_a_real_server_never_closes_with_1011(settings, models):
    """Fuzzed frames of every protocol over real websockets: answers are `error` messages, no 1011."""
    import websockets
    from websockets.sync.client import connect

    from callsense.config import AudioHookKey, AudioHookSettings
    from callsense.service.audiohook_client import Credentials, signed_headers
    from callsense.service.server import CallServer

    settings.server.tokens = {"t": {"role": "supervisor"}}
    creds = Credentials("k1", b"fuzz-secret", AH_ORG)
    settings.server.audiohook = AudioHookSettings(
        keys={"k1": AudioHookKey(secret=base64.b64encode(b"fuzz-secret").decode())}
    )
    settings.server.idle_timeout_s = 2.0
    server = CallServer(settings, models)
    loop = asyncio.new_event_loop()
    port = loop.run_until_complete(server.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    closes: list[int] = []
    tried = {"count": 0}

    @settings_for_server
    @given(
        path=st.sampled_from(["/ingest", "/twilio", "/audio_fork", "/console", "/audiohook"]),
        frames=st.lists(
            st.one_of(
                mutate(PLAIN_START).map(dumps),
                mutate(TWILIO_START).map(dumps),
                mutate(TWILIO_MEDIA).map(dumps),
                mutate(FORK_START).map(dumps),
                mutate(AH_OPEN).map(dumps),
                mutate(AH_GAP).map(dumps),
                mutate({"type": "feedback", "call_id": "c1", "hint_id": "h", "action": "accepted"}).map(dumps),
                st.binary(max_size=600),
                st.text(max_size=100),
            ),
            min_size=1,
            max_size=5,
        ),
    )
    def exchange(path, frames):
        tried["count"] += 1
        url = f"ws://127.0.0.1:{port}{path}?token=t"
        signed = signed_headers(url, creds, AH_SESSION) if path == "/audiohook" else {}
        with connect(url, open_timeout=10, additional_headers=signed) as ws:
            try:
                for frame in frames:
                    ws.send(frame)
                ws.send(dumps({"type": "stop"}) if path != "/twilio" else dumps({"event": "stop"}))
                while True:
                    ws.recv(timeout=0.3)
            except TimeoutError:
                pass
            except websockets.exceptions.ConnectionClosed as exc:
                if exc.rcvd is not None:
                    closes.append(exc.rcvd.code)

    try:
        exchange()
        health = json.loads(
            __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read()
        )
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert tried["count"] >= 40
    assert 1011 not in closes
    assert health["status"] == "ok"


settings_for_server = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


# -- a call's input stream in the cluster (entries a worker reads from Redis) --

ENTRY = {b"k": b"audio", b"ch": b"2", b"start": b"1.5", b"at": b"1795939125.5", b"pcm": bytes(64)}


def _entry_field(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [b"k", b"ch", b"start", b"at", b"pcm", b"hint", b"action", b"by", b"code", b"message", b"reason"]
            + [b"text", b"joining", b"\xff"]
        ),
        st.one_of(
            st.binary(max_size=40),
            junk.map(_entry_field),
            st.sampled_from([b"audio", b"feedback", b"note", b"error", b"end", b"nan", b"0", b"1", b"-3"]),
        ),
        max_size=7,
    ),
    base=st.booleans(),
)
def test_broker_entries_decode_or_raise_malformed(fields, base):
    """A worker reads whatever is in a call's stream: it decodes it or names it malformed (the call
    then ends with an error event), never another exception that would kill the reader silently."""
    from callsense.events import NOTE_CHARS
    from callsense.service.broker import MalformedEntry, decode_message
    from callsense.service.calls import Audio, Note

    entry = {**ENTRY, **fields} if base else fields
    try:
        msg = decode_message(entry)
    except MalformedEntry:
        return
    if isinstance(msg, Audio):
        assert 1 <= msg.chunk.audio.shape[0] <= 8 and np.isfinite(msg.chunk.audio).all()
    if isinstance(msg, Note):
        assert 0 < len(msg.text) <= NOTE_CHARS


# -- what gateways and workers read from the cluster's other streams --

FUZZ_SIGNER_SECRET = b"fuzz-secret-0123456789"
_EVENT = {
    "c": "call-1",
    "raw": {
        "type": "risk",
        "call_id": "call-1",
        "seq": 4,
        "t": 3.0,
        "level": 0.7,
        "frustration": 0.7,
        "latched": False,
        "reason": "customer_frustrated",
    },
    "at": 1795939125.5,
    "pub": 1795939125.6,
}
_CONTROL = {"c": "call-1", "ctl": {"saved": True, "clean": False, "failure": "x"}}


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.one_of(st.sampled_from([_EVENT, _CONTROL]), mutate(_EVENT), mutate(_CONTROL), junk), signed=st.booleans())
def test_event_entries_are_used_or_refused(data, signed):
    """An entry of the cluster's event streams, signed or not, of any shape (a risk event's
    frustration too): the gateway uses it or refuses it as malformed, never fails on it."""
    from callsense.service import broker as b

    signer = b.Signer(FUZZ_SIGNER_SECRET)
    text = json.dumps(data, allow_nan=True)
    fields = {b"e": text.encode()}
    if signed:
        fields[b"s"] = signer.tag({"e": text}).encode()
    try:
        item = b.decode_entry(fields, signer)
    except b.MalformedEntry:
        return
    assert signed, "an unsigned entry is never used"
    if isinstance(item, b.Published):
        assert item.event.call_id == data["c"]
        if item.event.type == "risk":
            assert item.event.frustration is None or 0 <= item.event.frustration <= 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    meta=mutate({"protocol": "plain", "roles": '["operator", "customer"]', "operator": "op-1", "language": "ru"}),
    call=st.one_of(st.just("call-1"), junk.map(str)),
)
def test_jobs_and_call_hashes_are_used_or_refused(meta, call):
    from callsense.service import broker as b

    signer = b.Signer(FUZZ_SIGNER_SECRET)
    with contextlib.suppress(b.MalformedEntry):
        assert b.decode_job({b"call": call.encode(), b"s": signer.tag({"call": call}).encode()}, signer) == call
    raw = {k.encode(): (v if isinstance(v, str) else json.dumps(v)).encode() for k, v in meta.items()}
    try:
        got = b.decode_meta(raw)
    except b.MalformedEntry:
        return
    assert 1 <= len(got.roles) <= b.MAX_CHANNELS and got.protocol
