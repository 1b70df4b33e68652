"""The live service under a hostile or unlucky network, over real websockets on loopback with the real
models: identity, admission, stage failures, backpressure, bounded memory, durability, honest delay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets

from callsense.audio.files import probe
from callsense.reports.store import Store
from callsense.service.client import stream_file
from callsense.service.server import CallServer

ROOT = Path(__file__).resolve().parent.parent
CALL = ROOT / "callsense" / "samples" / "ru_call_stereo.flac"
SHORT = Path(__file__).parent / "data" / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac"


def _start(call_id: str, **extra: object) -> str:
    return json.dumps(
        {"type": "start", "call_id": call_id, "sample_rate": 8000, "encoding": "mulaw", "channels": ["customer"], **extra}
    )


async def _replies_until_closed(ws: websockets.ClientConnection) -> list[dict]:
    out = []
    try:
        while True:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    except websockets.exceptions.ConnectionClosed:
        return out


def test_bad_start_values_are_answered_and_the_connection_stays(server):
    async def scenario():
        port = await server.start("127.0.0.1", 0)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ingest?token=op1") as ws:
            answers = []
            for bad in (
                _start("x", language="xx-YY"),
                _start("../../etc"),
                _start("c", channels=["boss"]),
                _start("c", sample_rate=float("nan")),
                _start("c", channels=["customer"] * 9),
            ):
                await ws.send(bad)
                answers.append(json.loads(await ws.recv()))
            await ws.send(_start("good-call", language="ru-RU"))  # a BCP-47 tag is understood as ru
            accepted = json.loads(await ws.recv())
            await ws.send(b"\x7f" * 800)
            await ws.send(json.dumps({"type": "stop"}))
            rest = await _replies_until_closed(ws)
        await server.shutdown()
        return answers, accepted, rest

    answers, accepted, rest = asyncio.run(scenario())
    assert [a["type"] for a in answers] == ["error"] * 5
    assert [a["code"] for a in answers][1:] == ["bad_call_id", "bad_frame", "bad_frame", "too_many_channels"]
    assert "language" in answers[0]["message"]
    assert accepted == {"type": "accepted", "call_id": "good-call"}
    assert rest[-1]["type"] == "ended" and rest[-1]["clean"] is True


def test_identity_is_bound_to_the_token_and_ids_are_unique(server):
    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/ingest"
        async with websockets.connect(f"{url}?token=op1") as ws:  # op-1's token may not stream op-2's call
            await ws.send(_start("a", operator_id="op-2"))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as refused:
                await ws.recv()
        # two streams with the same id at once (Twilio callSid reuse): distinct calls, never merged
        async with websockets.connect(f"{url}?token=trunk") as one, websockets.connect(f"{url}?token=trunk") as two:
            await asyncio.gather(one.send(_start("same", operator_id="op-2")), two.send(_start("same")))
            ids = [json.loads(await one.recv())["call_id"], json.loads(await two.recv())["call_id"]]
            operators = {c.call_id: c.operator_id for c in server.calls.values()}
            for ws in (one, two):
                await ws.send(json.dumps({"type": "stop"}))
                await _replies_until_closed(ws)
        await server.shutdown()
        return refused.value.rcvd.code, ids, operators

    code, ids, operators = asyncio.run(scenario())
    assert code == 4003
    assert len(set(ids)) == 2 and "same" in ids
    assert operators[ids[0]] == "op-2" and operators[ids[1]] is None  # an ingest token binds to its operators


def test_a_full_server_refuses_new_calls_with_a_reason(server):
    server.settings.server.max_calls = 1

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/ingest?token=op1"
        async with websockets.connect(url) as first:
            await first.send(_start("first"))
            await first.recv()
            async with websockets.connect(url) as second:
                await second.send(_start("second"))
                with pytest.raises(websockets.exceptions.ConnectionClosed) as full:
                    await second.recv()
            await first.send(json.dumps({"type": "stop"}))
            await _replies_until_closed(first)
        await server.shutdown()
        return full.value.rcvd

    closed = asyncio.run(scenario())
    assert closed.code == 1013 and "full" in closed.reason


def test_a_failing_stage_ends_the_call_loudly_and_keeps_what_it_had(server, monkeypatch):
    from callsense.stages.emotion import EmotionStage

    def broken(self, fin):
        raise RuntimeError("emotion model exploded")

    monkeypatch.setattr(EmotionStage, "push", broken)

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        async with websockets.connect(f"{url}/console?token=sup") as console:
            await console.send(json.dumps({"type": "resume", "after": {}}))
            result = await stream_file(SHORT, url, "op1", speed=0)
            seen = []
            while not seen or seen[-1]["type"] != "call_ended":
                seen.append(json.loads(await asyncio.wait_for(console.recv(), 60)))
        await server.shutdown()
        return result, seen

    result, seen = asyncio.run(scenario())
    fatal = [e for e in seen if e["type"] == "error"]
    assert fatal and fatal[0]["fatal"] and "exploded" in fatal[0]["message"]
    assert seen[-1]["type"] == "call_ended" and seen[-1]["reason"] == "stage_failed"
    assert any(e["type"] == "transcript_final" for e in seen), "what the call had before the failure is kept"
    assert result["clean"] is False
    store = Store(server.settings.server.store)
    status = store.db.execute("SELECT status FROM calls WHERE call_id = ?", (result["call_id"],)).fetchone()[0]
    assert status == "interrupted"
    assert (store.call_dir("reports", result["call_id"]) / "report.json").exists()


def test_a_source_still_sending_to_a_failed_call_is_told_and_let_go(server, monkeypatch):
    """A stage fails early in a 43 s call sent as fast as the server takes it: the source, blocked on
    the full inbox of a call nobody works on any more, was left waiting forever (seen in the load
    bench). It is now told the call ended and why, and the server serves the next call."""
    from callsense.stages.emotion import EmotionStage

    def broken(self, fin):
        raise RuntimeError("emotion model exploded")

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        with monkeypatch.context() as m:
            m.setattr(EmotionStage, "push", broken)
            failed = await asyncio.wait_for(stream_file(CALL, url, "op1", speed=0), 60)
        after = await asyncio.wait_for(stream_file(SHORT, url, "op1", speed=0), 60)
        await server.shutdown()
        return failed, after

    failed, after = asyncio.run(scenario())
    assert failed["clean"] is False and any("exploded" in e for e in failed["errors"])
    assert after["clean"] and after["errors"] == []


def test_fast_sender_loses_nothing_and_ended_calls_leave_memory(server, eventually, clip):
    server.settings.server.resume_window_s = 0.0
    server.settings.server.call_queue_s = 5.0  # a 20 s burst outruns the call: the server pushes back
    call = clip("ru_call_stereo.flac", 20)

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        result = await stream_file(call, url, "op1", speed=0)  # as fast as the server takes it
        await eventually(lambda: not server.fanout.rooms, "the ended call's room to leave memory")
        # a new console sees live calls only: the ended call is gone from memory, not replayed
        async with websockets.connect(f"{url}/console?token=sup") as console:
            await console.send(json.dumps({"type": "resume", "after": {}}))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(console.recv(), 1.0)
        rooms, calls = len(server.fanout.rooms), len(server.calls)
        await server.shutdown()
        return result, rooms, calls

    result, rooms, calls = asyncio.run(scenario())
    assert result["clean"] and result["errors"] == []
    events = Store(server.settings.server.store).events(result["call_id"])
    ended = [e for e in events if e.type == "call_ended"][0]
    assert abs(ended.duration_s - probe(call).duration) < 0.1, "every frame of the burst was processed"
    assert rooms == 0 and calls == 0


def test_a_call_far_behind_keeps_its_connection_and_all_its_audio(server, monkeypatch, clip):
    """While a call is behind, its socket is not read (backpressure), so pongs wait unread: a keepalive
    timeout used to close such calls (1011) and store them cut short as complete. Here the pipeline stalls
    for many ping intervals while a fast source keeps sending; the call ends clean, every second heard."""
    import threading

    from callsense.stages.emotion import EmotionStage

    server.settings.server.ping_interval_s = 0.2
    server.settings.server.call_queue_s = 5.0  # the inbox fills within the 20 s burst: reading pauses
    call = clip("ru_call_stereo.flac", 20)
    stalled = threading.Event()
    push = EmotionStage.push

    def slow_once(self, fin):
        if not stalled.is_set():
            stalled.set()
            threading.Event().wait(3.0)  # the fault injected: one final takes 3 s (15 ping intervals)
        return push(self, fin)

    monkeypatch.setattr(EmotionStage, "push", slow_once)

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        result = await stream_file(call, f"ws://127.0.0.1:{port}", "op1", speed=0)
        await server.shutdown()
        return result

    result = asyncio.run(scenario())
    assert stalled.is_set() and result["clean"] and result["errors"] == [], result
    events = Store(server.settings.server.store).events(result["call_id"])
    ended = next(e for e in events if e.type == "call_ended")
    assert abs(ended.duration_s - probe(call).duration) < 0.1, "every frame was processed"


def test_a_source_gone_without_a_stop_leaves_an_incomplete_call(server, eventually):
    """The connection drops mid-call (no stop message): what was heard is kept, and the call says it may be
    cut short - stored as incomplete, flagged in its report, its end-of-call checklist items not judged."""

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ingest?token=op1") as ws:
            await ws.send(_start("dropped"))
            await ws.recv()
            for _ in range(20):
                await ws.send(b"\x7f" * 800)
        # closed without a stop: the server ends the call as soon as it sees the socket gone
        await eventually(lambda: "dropped" in server.finished, "the dropped call to be finished")
        await server.shutdown()

    asyncio.run(scenario())
    store = Store(server.settings.server.store)
    status, report = store.db.execute("SELECT status, report FROM calls WHERE call_id = 'dropped'").fetchone()
    assert status == "incomplete"
    report = json.loads(report)
    assert [f["flag"] for f in report["flags"]][:1] == ["incomplete"]
    assert any("without a stop" in e for e in report["errors"])
    assert all(c["passed"] is None for c in report["compliance"] if c["id"] == "farewell")


def test_console_delay_is_honest(server):
    """A console that reads late sees delays at least as long as it waited."""

    async def scenario():
        port = await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        result = await stream_file(SHORT, url, "op1", speed=0)
        await asyncio.sleep(1.5)  # the scenario: this console reads 1.5 s late (not a wait for progress)
        async with websockets.connect(f"{url}/console?token=sup") as console:
            await console.send(json.dumps({"type": "resume", "after": {result["call_id"]: 0}}))
            got = [json.loads(await asyncio.wait_for(console.recv(), 10)) for _ in range(3)]
        await server.shutdown()
        return got

    got = asyncio.run(scenario())
    assert all(e["delay_s"] is not None and e["delay_s"] >= 1.5 for e in got)


def test_metrics_need_a_token(server):
    async def scenario():
        port = await server.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"

        def get(path: str, token: str | None = None) -> int:
            req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        codes = [
            await asyncio.to_thread(get, "/metrics"),
            await asyncio.to_thread(get, "/metrics", "op1"),
            await asyncio.to_thread(get, "/metrics", "sup"),
            await asyncio.to_thread(get, "/health"),
        ]
        await server.shutdown()
        return codes

    assert asyncio.run(scenario()) == [401, 401, 200, 200]


def test_audiosocket_peers_outside_loopback_need_the_allow_list(settings):
    server = CallServer(settings)  # the allow-list alone: no models
    assert server._peer_allowed("127.0.0.1") and server._peer_allowed("::1")
    assert not server._peer_allowed("10.1.2.3")
    server.settings.server.audiosocket_peers = ["10.1.0.0/16"]
    assert server._peer_allowed("10.1.2.3") and not server._peer_allowed("10.2.0.1")


def test_trickling_audiosocket_peers_cannot_hold_the_call_slots(server, eventually, caplog):
    """AudioSocket has no authentication: peers that open calls and send a frame now and then (they
    used to hold every `max_calls` slot) are ended once past the grace, and the slots are free again;
    a flood of frames before the uuid ends its connection after a few log lines."""
    from callsense.audio.protocols import AudioSocketProtocol as AS

    cfg = server.settings.server
    cfg.max_calls, cfg.audiosocket_grace_s = 2, 2.0
    frame = AS.frame(AS.AUDIO, bytes(320))  # 20 ms at 8 kHz

    async def trickle(port: int, n: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(AS.frame(AS.UUID, bytes([n]) * 16) + frame)
        while True:  # a frame every 0.3 s: 7% of real time
            try:
                if await asyncio.wait_for(reader.read(1), 0.3) == b"":
                    return True  # the server closed the connection
            except TimeoutError:
                writer.write(frame)
            except ConnectionError:
                return True

    async def flood(port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(AS.frame(AS.AUDIO) * 100_000)
            await writer.drain()
            return await asyncio.wait_for(reader.read(1), 30) == b""
        except ConnectionError:  # closed with the flood unread: a reset
            return True

    async def scenario() -> tuple[list[bool], bool]:
        await server.start("127.0.0.1", 0, audiosocket_port=0)
        port = server.audiosocket_port
        ended = await asyncio.wait_for(asyncio.gather(trickle(port, 1), trickle(port, 2)), 60)
        await eventually(lambda: not any(not c.ended for c in server.calls.values()), "the slots to be free", 30)
        flooded = await flood(port)
        await server.shutdown()
        return ended, flooded

    with caplog.at_level("WARNING", logger="callsense.ingest"):
        ended, flooded = asyncio.run(scenario())
    assert ended == [True, True] and flooded
    assert len([r for r in caplog.records if "audiosocket" in r.getMessage()]) < 20, "a few lines, not one per frame"


@pytest.mark.slow
def test_kill_9_mid_call_keeps_what_was_heard(tmp_path):
    """A real `callsense serve` process killed mid-call: the next start shows the call as interrupted,
    with its events and a report. What the server had processed when it was killed - every final a
    console had been sent (the server stores an event before it sends it) - survives; how far it got
    depends on the machine's speed, not on a wall-clock guess."""
    store = tmp_path / "store" / "calls.sqlite"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"server:\n  store: {store}\n  tokens:\n    t: {{role: supervisor}}\n", encoding="utf-8")
    port = 18765 + os.getpid() % 1000
    proc = subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "--config", str(cfg), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen: list[dict] = []
    try:
        assert "serving" in (proc.stdout.readline() if proc.stdout else ""), "server did not start"

        async def half_a_call() -> None:
            url = f"ws://127.0.0.1:{port}"
            async with (
                websockets.connect(f"{url}/ingest?token=t") as ws,
                websockets.connect(f"{url}/console?token=t") as console,
            ):
                await console.send(json.dumps({"type": "resume", "after": {}}))
                await ws.send(
                    json.dumps(
                        {"type": "start", "call_id": "killed", "sample_rate": 16000, "channels": ["operator", "customer"]}
                    )
                )
                from callsense.audio.files import FileSource

                for chunk in FileSource(CALL, chunk_ms=500):
                    if chunk.start > 20:
                        break
                    await ws.send((chunk.audio.T.clip(-1, 1) * 32767).astype("<i2").tobytes())
                # kill once the server has sent two finals: mid-call, with something to keep
                while sum(e["type"] == "transcript_final" for e in seen) < 2:
                    seen.append(json.loads(await asyncio.wait_for(console.recv(), 240)))
                proc.send_signal(signal.SIGKILL)

        asyncio.run(half_a_call())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert Store(store).live_calls() == [("killed", "plain", None)]

    from callsense.config import load_settings
    from callsense.service.calls import recover_interrupted

    kept = Store(store)
    assert recover_interrupted(load_settings(cfg), kept) == ["killed"]
    row = kept.db.execute("SELECT status, report FROM calls WHERE call_id = 'killed'").fetchone()
    assert row[0] == "interrupted"
    stored = {e.utterance_id for e in kept.events("killed") if e.type == "transcript_final"}
    sent = {e["utterance_id"] for e in seen if e["type"] == "transcript_final"}
    assert sent <= stored, f"finals a console was sent before the kill are kept: missing {sent - stored}"
    assert json.loads(row[1])["metrics"]["duration_s"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_call_threads_run_with_capped_malloc_arenas():
    """Live calls run on many threads; glibc would give them up to 8 malloc arenas per core and keep
    their memory, so the server grew with every round of concurrent calls (soak, docs/benchmarks.md).
    The C library takes the cap of one arena per core."""
    from callsense.service.calls import cap_malloc_arenas

    assert cap_malloc_arenas(os.cpu_count() or 2)
