"""Genesys AudioHook: the session protocol (sequence numbers, open/opened, probe, ping, pause, discarded
audio, close/closed, disconnect on a broken message), the signed connection request, and a real
server taking sessions from the simulated Genesys client over loopback."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import uuid

import numpy as np
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from callsense.audio.audiohook import NULL_UUID, AudioHookProtocol, duration
from callsense.audio.codecs import encode_mulaw
from callsense.audio.protocols import ProtocolError
from callsense.config import AudioHookKey, AudioHookSettings
from callsense.reports.report import build_report
from callsense.service.audiohook_auth import AudioHookAuth
from callsense.service.audiohook_client import Credentials, Script, signed_headers, stream_audiohook

SESSION = str(uuid.uuid4())
ORG = str(uuid.uuid4())
STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
MONO = {"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000}


class Client:
    """Writes client messages with rising sequence numbers."""

    def __init__(self, proto: AudioHookProtocol) -> None:
        self.proto, self.seq = proto, 0

    def send(self, kind: str, parameters: dict | None = None, **override: object) -> list:
        self.seq += 1
        msg = {"version": "2", "id": SESSION, "type": kind, "seq": self.seq, "serverseq": self.proto.seq}
        msg |= {"position": "PT0S", "parameters": parameters or {}} | override
        return self.proto.feed(json.dumps(msg))

    def open(self, conversation: str | None = None, media: list | None = None, **params: object) -> None:
        self.send(
            "open",
            {"organizationId": ORG, "conversationId": conversation or str(uuid.uuid4()), "media": media or [MONO, STEREO]}
            | params,
        )


def replies(proto: AudioHookProtocol) -> list[dict]:
    out = [json.loads(m) for m in proto.outbox]
    proto.outbox.clear()
    return out


def test_open_picks_both_parties_and_maps_channels_to_roles():
    proto = AudioHookProtocol(session_id=SESSION, organization_id=ORG)
    client = Client(proto)
    client.open(language="ru-RU", customConfig={"operator_id": "op-1"})
    assert proto.start is not None
    assert proto.start.roles == ["customer", "operator"]  # external first, as offered
    assert (proto.start.encoding, proto.start.language, proto.start.operator_id) == ("mulaw", "ru", "op-1")
    opened = json.loads(proto.accepted("call") or "")
    assert opened["type"] == "opened" and opened["parameters"]["media"] == [STEREO]
    assert (opened["seq"], opened["clientseq"], opened["id"]) == (1, 1, SESSION)
    # interleaved PCMU: the customer's tone on channel 0, silence for the agent
    tone = np.sin(np.arange(800) / 8000 * 2 * np.pi * 300).astype(np.float32) * 0.5
    frame = np.stack([np.frombuffer(encode_mulaw(tone), np.uint8), np.full(800, 0xFF, np.uint8)], 1).tobytes()
    chunks = proto.feed(frame) + client.send("close")
    audio = np.concatenate([c.audio for c in chunks], axis=1)
    assert audio.shape[0] == 2 and abs(audio.shape[1] - 1600) <= 40  # 0.1 s at 16 kHz
    assert np.abs(audio[0]).max() > 0.3 > np.abs(audio[1]).max()
    assert [r["type"] for r in replies(proto)] == ["closed"] and proto.ended


def test_a_probe_is_answered_and_never_becomes_a_call():
    proto = AudioHookProtocol(session_id=SESSION)
    client = Client(proto)
    client.open(conversation=NULL_UUID)
    assert proto.start is None and proto.probe
    assert replies(proto)[0]["type"] == "opened"
    assert proto.feed(b"\xff" * 160) == []
    client.send("close", {"reason": "end"})
    assert replies(proto)[0]["type"] == "closed" and proto.ended


def test_ping_pause_discard_update_and_error_are_answered_or_recorded():
    proto = AudioHookProtocol()
    client = Client(proto)
    client.open(media=[MONO])
    proto.accepted("call")
    client.send("ping", {"rtt": "PT0.2S"})
    assert [r["type"] for r in replies(proto)] == ["pong"]
    client.send("paused")
    assert proto.state == "paused"
    gap = client.send("resumed", {"start": "PT1.5S", "discarded": "PT2.25S"})
    assert proto.state == "active"
    big = client.send("discarded", {"start": "PT4S", "discarded": "PT3600S"})  # bounded: 60 s of silence
    tail = client.send("close")
    heard = sum(c.audio.shape[1] for c in gap + big + tail) / 16000
    assert heard == pytest.approx(2.25 + AudioHookProtocol.MAX_GAP_S, abs=0.01)  # the call's timeline stays true
    assert [code for code, _ in proto.notices] == ["audio_discarded", "audio_discarded"]
    assert "3600.00 s" in proto.notices[1][1]
    proto = AudioHookProtocol()
    client = Client(proto)
    client.open(media=[MONO])
    client.send("update", {"language": "de-DE"})
    client.send("error", {"code": 429, "message": "rate limited"})
    assert [code for code, _ in proto.notices] == ["language_update", "source_error"]
    assert proto.notice("audio_discarded", "x") is None  # AudioHook has no warning message: the call keeps it


@pytest.mark.parametrize(
    "breaker",
    [
        lambda c: c.send("ping", seq=7),  # skipped sequence number
        lambda c: c.send("ping", id=str(uuid.uuid4())),  # another session's id
        lambda c: c.send("ping", serverseq=99),  # a server message that was never sent
        lambda c: c.send("dance"),
        lambda c: c.proto.feed("{not json"),
        lambda c: c.proto.feed(json.dumps({"type": "ping"})),  # no version, seq, id, position
    ],
)
def test_a_broken_message_gets_one_disconnect_and_the_session_still_closes(breaker):
    proto = AudioHookProtocol(session_id=SESSION)
    client = Client(proto)
    client.open(media=[MONO])
    proto.accepted("call")
    with pytest.raises(ProtocolError) as err:
        breaker(client)
    disconnect = json.loads(proto.problem(err.value.code, str(err.value)) or "")
    assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
    assert proto.problem("bad_frame", "again") is None  # said once
    assert proto.feed(b"\x00\x01" * 80) == []  # audio after a disconnect is not the call's
    client.seq = proto.clientseq
    client.send("close", {"reason": "disconnect"})
    assert replies(proto)[-1]["type"] == "closed" and proto.ended


def test_audio_before_open_and_an_organization_mismatch_are_refused():
    proto = AudioHookProtocol(session_id=SESSION, organization_id=str(uuid.uuid4()))
    with pytest.raises(ProtocolError, match="before the session was opened"):
        proto.feed(b"\xff" * 160)
    with pytest.raises(ProtocolError) as err:
        Client(proto).open()
    assert err.value.code == "unauthorized"
    assert json.loads(proto.problem(err.value.code, str(err.value)) or "")["parameters"]["reason"] == "unauthorized"


def test_durations_read_back():
    assert duration(0) == "PT0S" and duration(1.25) == "PT1.250S"


# -- the signed connection request --

SECRET = b"callsense-test-client-secret-32b"
KEY = "key-1"


def _auth(**key: object) -> AudioHookAuth:
    secret = base64.b64encode(SECRET).decode()
    return AudioHookAuth(AudioHookSettings(keys={KEY: AudioHookKey(secret=secret, operator_id="op-1", **key)}))


def _request(headers: dict[str, str], path: str = "/audiohook", host: str = "127.0.0.1:8765") -> Request:
    return Request(path, Headers({"Host": host, **headers}))


def test_a_request_signed_with_the_client_secret_is_let_in_once():
    auth, creds = _auth(), Credentials(KEY, SECRET, ORG)
    headers = signed_headers("ws://127.0.0.1:8765/audiohook", creds, SESSION)
    assert auth.check(_request(headers)) is None
    assert "replay" in (auth.check(_request(headers)) or "")
    grant = auth.grant(_request(headers))
    assert grant is not None and grant.role == "ingest" and grant.operator_id == "op-1"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h: h | {"X-API-KEY": "other"}, "X-API-KEY"),
        (lambda h: h | {"Audiohook-Session-Id": str(uuid.uuid4())}, "signature"),  # a signed header changed
        (lambda h: {k: v for k, v in h.items() if k not in ("Signature", "Signature-Input")}, "signature"),
    ],
)
def test_a_request_not_signed_by_the_key_is_refused(change, why):
    headers = signed_headers("ws://127.0.0.1:8765/audiohook", Credentials(KEY, SECRET, ORG), SESSION)
    assert why in (_auth().check(_request(change(headers))) or "")


def test_a_wrong_secret_another_host_or_organization_is_refused():
    headers = signed_headers("ws://127.0.0.1:8765/audiohook", Credentials(KEY, b"not the secret", ORG), SESSION)
    assert "signature" in (_auth().check(_request(headers)) or "")
    headers = signed_headers("ws://127.0.0.1:8765/audiohook", Credentials(KEY, SECRET, ORG), SESSION)
    assert "signature" in (_auth().check(_request(headers, host="evil.example:8765")) or "")
    headers = signed_headers("ws://127.0.0.1:8765/audiohook", Credentials(KEY, SECRET, ORG), SESSION)
    assert "organization" in (_auth(organization_id=str(uuid.uuid4())).check(_request(headers)) or "")


def test_an_old_signature_is_refused():
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=2)
    headers = signed_headers("ws://127.0.0.1:8765/audiohook", Credentials(KEY, SECRET, ORG), SESSION, created=old)
    assert "age" in (_auth().check(_request(headers)) or "")


# -- a real server and the simulated Genesys client --

CALL = "ru_call_stereo.flac"


def test_genesys_sessions_end_to_end(server, clip, eventually):
    """A probe, an unsigned connection, and a call with a pause and discarded audio, on one server."""
    secret = base64.b64encode(SECRET).decode()
    server.settings.server.audiohook = AudioHookSettings(keys={KEY: AudioHookKey(secret=secret, operator_id="op-1")})
    server.audiohook = AudioHookAuth(server.settings.server.audiohook)
    call = clip(CALL, 16)
    creds = Credentials(KEY, SECRET, ORG)

    async def scenario():
        import websockets

        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        probe = await stream_audiohook(call, url, creds, script=Script(probe=True))
        try:
            await websockets.connect(f"{url}/audiohook")
            unsigned = None
        except websockets.exceptions.InvalidStatus as exc:
            unsigned = exc.response.status_code
        script = Script(ping_every_s=2.0, pause_at_s=4.0, pause_s=1.5, discard_at_s=9.0, discard_s=1.0)
        result = await stream_audiohook(call, url, creds, speed=4.0, language="ru-RU", script=script)
        await eventually(lambda: result["call_id"] in server.finished, "the call to be finished", 240)
        events = server.store.events(result["call_id"])
        await server.shutdown()
        return probe, unsigned, result, events

    probe, unsigned, result, events = asyncio.run(scenario())
    assert probe["opened"] is not None and probe["clean"] and probe["errors"] == []
    assert unsigned == 401
    assert result["opened"]["media"][0]["channels"] == ["external", "internal"]
    assert result["clean"] and result["pongs"] >= 2, result
    kinds = [e.type for e in events]
    assert kinds.count("call_ended") == 1
    errors = [e for e in events if e.type == "error"]
    assert [e.code for e in errors] == ["audio_discarded", "audio_discarded"]  # the pause and the gap, said
    finals = [e for e in events if e.type == "transcript_final"]
    assert {f.role for f in finals} == {"operator", "customer"}
    ended = next(e for e in events if e.type == "call_ended")
    assert ended.duration_s == pytest.approx(16.0, abs=0.5)  # withheld audio stood in by silence: true timeline
    report = build_report(events, server.settings)
    assert "audio_gap" in {f["flag"] for f in report["flags"]}
