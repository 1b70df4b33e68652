"""The live service over real websockets on loopback: ingest, consoles, auth, resume, bad input."""

import asyncio
import json
import urllib.request

import pytest
import websockets

from callsense.service.client import stream_file
from callsense.service.server import CallServer

CALL = "ru_call_stereo.flac"


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


async def _collect(url, token, until_end=True, after=None, limit=10_000):
    events = []
    async with websockets.connect(f"{url}/console?token={token}") as ws:
        await ws.send(json.dumps({"type": "resume", "after": after or {}}))
        async for message in ws:
            data = json.loads(message)
            if data.get("type") == "notice":
                continue
            events.append(data)
            if (until_end and data["type"] == "call_ended") or len(events) >= limit:
                break
    return events


def test_live_call_reaches_consoles_with_resume_and_auth(server, samples):
    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        # a wrong token is refused with a reason
        async with websockets.connect(f"{url}/console?token=nope") as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 4001 and "token" in closed.value.rcvd.reason
        sup = asyncio.create_task(_collect(url, "sup"))
        other_op = asyncio.create_task(_collect(url, "op2", until_end=False, limit=1))
        # a console that joins a live call gets it from the start: no need to wait for them
        result = await stream_file(samples / CALL, url, "op1", speed=3.0, operator_id="op-1")
        events = await asyncio.wait_for(sup, 120)
        call_id = result["call_id"]
        viewers = {who for _, who, seen, _ in server.store.access_log() if seen == call_id}  # before any resume
        # a console that reconnects halfway resumes without losing or repeating events
        finals = [e for e in events if e["type"] == "transcript_final"]
        cut = events.index(finals[1])
        resumed = await _collect(url, "sup", after={result["call_id"]: events[cut]["seq"]})
        health = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health"))
        # hints are the operator's to answer: a supervisor's answer to one is refused, said so
        hint = next(e for e in events if e["type"] == "hint" and not e["to_supervisor"])
        async with websockets.connect(f"{url}/console?token=sup") as ws:
            await ws.send(json.dumps({"type": "resume", "after": {result["call_id"]: 10**9}}))
            await ws.send(
                json.dumps(
                    {"type": "feedback", "call_id": result["call_id"], "hint_id": hint["hint_id"], "action": "accepted"}
                )
            )
            refused = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await server.shutdown()
        other_op.cancel()
        return result, events, cut, resumed, health, other_op, (refused, viewers)

    result, events, cut, resumed, health, other_op, (refused, viewers) = asyncio.run(scenario())
    assert refused["type"] == "error" and "supervisors acknowledge escalations" in refused["message"]
    # the supervisor watched the call from before it started: that view is in the access log too
    assert "supervisor:sup" in viewers, viewers
    assert result["errors"] == []
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    kinds = {e["type"] for e in events}
    assert {"call_started", "transcript_final", "emotion", "hint", "metrics", "call_ended"} <= kinds
    assert [e["seq"] for e in resumed] == [e["seq"] for e in events[cut + 1 :] if e["type"] != "transcript_partial"] or [
        e["seq"] for e in resumed
    ] == seqs[cut + 1 :]
    assert health["status"] == "ok"
    assert other_op.cancelled() or other_op.result() == []  # op2 never sees op1's call


def test_bad_frames_get_errors_and_the_connection_stays(server, eventually):
    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        replies = []
        async with websockets.connect(f"{url}/ingest?token=op1") as ws:
            await ws.send("{not json")
            replies.append(json.loads(await ws.recv()))
            await ws.send(
                json.dumps(
                    {"type": "start", "call_id": "bad", "sample_rate": 8000, "encoding": "mulaw", "channels": ["customer"]}
                )
            )
            replies.append(json.loads(await ws.recv()))
            await ws.send(b"\x7f" * 800)  # 0.1 s of mu-law silence: fine
            await ws.send(json.dumps({"type": "dance"}))
            replies.append(json.loads(await ws.recv()))
            await ws.send(b"\x7f" * 800)  # still usable after the bad frame
            await ws.send(json.dumps({"type": "stop"}))
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while True:
                    await ws.recv()
        # an oversized frame closes only that connection (1009); the server keeps serving
        server.settings.server.max_message_bytes = 1 << 20
        async with websockets.connect(f"{url}/ingest?token=op1", max_size=None) as ws:
            await ws.send(b"\x00" * (2 << 20))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as big:
                await ws.recv()
        health = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health"))
        await eventually(lambda: "bad" in server.finished, "the short call to be finished")
        await server.shutdown()
        return replies, big.value.rcvd.code, health

    replies, code, health = asyncio.run(scenario())
    assert replies[0]["type"] == "error" and "JSON" in replies[0]["message"]
    assert replies[1] == {"type": "accepted", "call_id": "bad"}
    assert replies[2]["type"] == "error" and "dance" in replies[2]["message"]
    assert code == 1009
    assert health["status"] == "ok"
    assert "bad" in server.finished  # the short call was still finished and persisted


def test_dev_tokens_refuse_public_addresses(settings):
    with pytest.raises(SystemExit, match="development tokens"):
        CallServer(settings).check_bind("0.0.0.0")
    CallServer(settings).check_bind("127.0.0.1")


@pytest.mark.parametrize("protocol", ["twilio", "audio_fork"])
def test_telephony_protocols_end_to_end(server, clip, protocol):
    """Twilio (mu-law 8 kHz tracks) and mod_audio_fork (L16) carry both parties to the right roles."""
    call = clip(CALL, 20)  # both parties speak in it

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        sup = asyncio.create_task(_collect(url, "sup"))
        roles = ["customer", "operator"] if protocol == "audio_fork" else None
        result = await stream_file(call, url, "op1", protocol=protocol, speed=4.0, roles=roles)
        events = await asyncio.wait_for(sup, 120)
        await server.shutdown()
        return result, events

    result, events = asyncio.run(scenario())
    assert result["errors"] == []
    finals = [e for e in events if e["type"] == "transcript_final"]
    assert {f["role"] for f in finals} == {"operator", "customer"}
    greeting = min(finals, key=lambda f: f["start"])
    # the prompt voice greets first; with audio_fork's caller-left convention it is labelled customer here
    assert greeting["role"] == ("operator" if protocol == "twilio" else "customer")
    assert events[-1]["type"] == "call_ended" and events[-1]["duration_s"] > 19.5
