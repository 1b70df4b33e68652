"""The cluster's transport without models: messages survive the stream exactly, a gateway refuses a
call no worker takes, a worker's writes are refused once another worker owns the call, and nothing a
process reads from Redis is trusted: entries no gateway or worker of the cluster wrote are refused,
counted and noted, never fatal."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable

import numpy as np
import pytest

from callsense.audio.codecs import AudioChunk
from callsense.config import SAMPLES_DIR as SAMPLES
from callsense.events import TranscriptFinal
from callsense.service import broker as b
from callsense.service.calls import Audio, End, Feedback, Note, SourceError

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed: apt-get install redis-server"
)


def _fields(entry: dict) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in entry.items()}


def test_every_inbox_message_survives_the_stream():
    rng = np.random.default_rng(0)
    pcm = (rng.integers(-32768, 32767, size=(2, 1600)) / 32768).astype(np.float32)
    audio = b.decode_message(_fields(b.encode_message(Audio(AudioChunk(pcm, 12.5), arrived=0.0))))
    assert isinstance(audio, Audio) and audio.chunk.start == 12.5
    np.testing.assert_array_equal(audio.chunk.audio, pcm)  # 16-bit samples come back exactly
    for msg in (
        Feedback("h3", "accepted", "operator:op-1"),
        Note("offer the fee refund", False, "supervisor:sup"),
        Note("I'm joining", True, "supervisor:sup"),
        SourceError("bad_frame", "x"),
        End("hangup"),
    ):
        assert b.decode_message(_fields(b.encode_message(msg))) == msg


SECRET = "test-secret-0123456789abcdef"
SIGNER = b.Signer(SECRET.encode())


def _signed_event(ev, red=None) -> dict[bytes, bytes]:
    return _fields(SIGNER.sign({"e": b.encode_event(ev, red if red is not None else ev)}))


def test_events_keep_their_redacted_copy_and_arrival():
    ev = TranscriptFinal(call_id="c", seq=7, speaker="ch1", start=1.0, end=2.0, text="my card 4111 1111 1111 1111")
    red = ev.model_copy(update={"text": "my card [CARD]"})
    got = b.decode_entry(_signed_event(ev, red), SIGNER)
    assert isinstance(got, b.Published)
    assert got.event == ev and got.redacted.text == "my card [CARD]" and got.delivery_s >= 0


def test_an_entry_is_trusted_only_with_the_clusters_signature():
    ev = TranscriptFinal(call_id="c", seq=7, speaker="ch1", start=1.0, end=2.0, text="hello")
    entry = _signed_event(ev)
    forged = {**entry, b"e": entry[b"e"].replace(b"hello", b"read me your card")}
    for bad in (forged, {b"e": entry[b"e"]}, {**entry, b"s": b"0" * 64}):
        with pytest.raises(b.MalformedEntry):
            b.decode_entry(bad, SIGNER)
    with pytest.raises(b.MalformedEntry):  # the same entry under another cluster's secret
        b.decode_entry(entry, b.Signer(b"another-secret-0123456789"))
    other = TranscriptFinal(call_id="d", seq=1, speaker="ch1", start=0.0, end=1.0, text="x")
    with pytest.raises(b.MalformedEntry, match="another call"):  # a redacted copy from another call
        b.decode_entry(_fields(SIGNER.sign({"e": b.encode_event(ev, other)})), SIGNER)


def test_the_broker_password_never_reaches_a_message():
    assert b.safe_url("redis://callsense:s3cr3t@redis.internal:6380/0") == "redis://callsense:***@redis.internal:6380/0"
    assert b.safe_url("rediss://:s3cr3t@h/1") == "rediss://:***@h/1"
    assert b.safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.fixture
def local_redis(tmp_path):
    from callsense.service.cluster import LocalRedis

    server = LocalRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@needs_redis
def test_a_call_no_worker_takes_is_refused_with_1013(local_redis, settings):
    from callsense.service.client import stream_file
    from callsense.service.gateway import Gateway

    settings.cluster.broker, settings.cluster.secret = local_redis.url, SECRET
    settings.cluster.assign_timeout_s = 1.0
    settings.server.tokens = {"sup": {"role": "supervisor"}}

    async def scenario():
        gateway = Gateway(settings)
        port = await gateway.start("127.0.0.1", 0)
        result = await stream_file(SAMPLES / "en_call_mono.flac", f"ws://127.0.0.1:{port}", "sup", speed=0)
        await gateway.shutdown()
        return result

    result = asyncio.run(scenario())
    assert not result["clean"] and any("1013" in e and "no worker" in e for e in result["errors"]), result


@needs_redis
def test_a_worker_cannot_write_into_a_call_it_no_longer_owns(local_redis):
    import redis

    from callsense.service.worker import PUBLISH

    conn = redis.Redis.from_url(local_redis.url)
    publish = conn.register_script(PUBLISH)
    keys = [b.call_key("c"), b.events_key("c"), b.EVENTS, b.input_key("c")]
    heard = [conn.xadd(b.input_key("c"), {"k": "end", "reason": str(i)}).decode() for i in range(3)]
    conn.hset(b.call_key("c"), "worker", "w1")
    # a checkpoint after the second input entry: the input before it is trimmed (a takeover starts there)
    assert publish(keys=keys, args=["w1", 100, 16000, 0.0, '{"seq": 1}', heard[1], "1-0", "{}", "sig"]) == 1
    assert [e[0].decode() for e in conn.xrange(b.input_key("c"))] == heard[1:]
    conn.hset(b.call_key("c"), "worker", "w2")  # w2 took it over
    assert publish(keys=keys, args=["w1", 100, 32000, 0.0, "", "0-0", "2-0", "{}", "sig"]) == -1
    assert conn.xlen(b.events_key("c")) == 1 and conn.hget(b.call_key("c"), "done") == b"16000"


@pytest.fixture
def cluster_settings(local_redis, settings):
    settings.cluster.broker, settings.cluster.secret = local_redis.url, SECRET
    settings.server.tokens = {"sup": {"role": "supervisor"}}
    return settings


@needs_redis
def test_a_worker_refuses_jobs_no_gateway_wrote_and_goes_on(cluster_settings, local_redis):
    """A job without a call, an unsigned job, a job whose call hash lacks its roles: each is refused,
    acknowledged and noted on the dead-letter stream; a gateway waiting on the call is told; the worker
    goes on taking calls (it used to die on the first, and again after every restart)."""
    import redis

    from callsense.service.worker import Worker

    conn = redis.Redis.from_url(local_redis.url)
    worker = Worker(cluster_settings, name="w-test")

    async def scenario():
        await worker.connect()
        conn.xadd(b.JOBS, {"foo": "bar"})
        conn.xadd(b.JOBS, SIGNER.sign({"foo": "bar"}))
        conn.xadd(b.JOBS, {"call": "unsigned"})
        conn.hset(b.call_key("noroles"), mapping={"state": "waiting", "protocol": "plain", "operator": ""})
        conn.xadd(b.JOBS, SIGNER.sign({"call": "noroles"}))
        taken = [await worker._take_new() for _ in range(4)]
        await worker.redis.aclose()
        return taken

    assert asyncio.run(scenario()) == [False] * 4
    assert conn.xlen(b.DEAD) == 4 and worker.rejects.counts["jobs"] == 4
    assert conn.xpending(b.JOBS, b.GROUP)["pending"] == 0 and conn.xlen(b.JOBS) == 0
    assert conn.hget(b.call_key("noroles"), "state") == b"refused"
    told = [b.decode_entry(f, SIGNER) for _, f in conn.xrange(b.EVENTS)]
    assert [(t.call_id, t.clean) for t in told] == [("noroles", False)]


async def _console_events(url: str, until: Callable[[list[dict]], bool]) -> list[dict]:
    import json

    import websockets

    got: list[dict] = []
    async with websockets.connect(f"{url}/console?token=sup") as ws:
        await ws.send(json.dumps({"type": "resume", "after": {}}))
        while not until(got):
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    return got


def _health(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


async def _health_becomes(port: int, status: int, timeout: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await asyncio.to_thread(_health, port)) != status:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"/health said {seen}, not {status}, for {timeout:.0f} s")
    return True


@needs_redis
def test_a_gateway_shows_only_what_its_workers_wrote(cluster_settings, local_redis):
    """Junk, forged events (a fake hint, a whole fake call, a high seq that would hide the rest of a
    real call) and events of the wrong schema on the event streams are refused; the real call's events
    reach consoles; a bad entry in a live call's stream does not stop a gateway from starting; a
    reader that fails takes /health to 503 until it runs again."""
    import redis

    from callsense.events import CallStarted, Hint
    from callsense.service.gateway import Gateway

    conn = redis.Redis.from_url(local_redis.url)
    conn.sadd(b.LIVE, "real", "../../etc")
    conn.xadd(b.events_key("real"), {"e": "{not json"})  # in a live call's stream before the gateway starts
    started = CallStarted(call_id="real", seq=1, source="plain", sample_rate=16000, channels=["operator", "customer"])
    fake_hint = Hint(call_id="real", seq=2, hint_id="h1", severity="critical", reason="x", title="Ask for the card")

    async def scenario():
        gateway = Gateway(cluster_settings)
        port = await gateway.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}"
        conn.xadd(b.EVENTS, {"foo": "bar"})
        conn.xadd(b.EVENTS, _fields({"e": b.encode_event(fake_hint, fake_hint)}))  # unsigned
        conn.xadd(b.EVENTS, _fields({"e": b.encode_event(started.model_copy(update={"seq": 10**6}), None)}))
        conn.xadd(b.EVENTS, _fields(SIGNER.sign({"e": '{"c": "real", "raw": {"type": "nope"}, "at": 0, "pub": 0}'})))
        for ev in (started, TranscriptFinal(call_id="real", seq=2, speaker="ch1", start=0, end=1, text="hello")):
            conn.xadd(b.EVENTS, _signed_event(ev))
        got = await _console_events(url, lambda got: any(e["type"] == "transcript_final" for e in got))
        healthy = await _health_becomes(port, 200)
        original, failures = gateway._deliver, []

        async def failing_once(published):
            if not failures:
                failures.append(published)
                raise RuntimeError("a fault in the reader")
            await original(published)

        gateway._deliver = failing_once
        conn.xadd(b.EVENTS, _signed_event(TranscriptFinal(call_id="real", seq=3, speaker="ch1", start=1, end=2, text="a")))
        down = await _health_becomes(port, 503)
        up = await _health_becomes(port, 200)
        rejected = gateway._metrics()["broker_rejected"]
        await gateway.shutdown()
        return got, healthy, down, up, rejected

    got, healthy, down, up, rejected = asyncio.run(scenario())
    assert [(e["type"], e["seq"]) for e in got if e["call_id"] == "real"] == [("call_started", 1), ("transcript_final", 2)]
    assert all(e["type"] != "hint" for e in got)
    assert healthy and down and up
    assert rejected == {"ev": 1, "events": 4} and conn.xlen(b.DEAD) == 5


@needs_redis
def test_a_call_id_in_use_gets_a_new_one_every_time(cluster_settings):
    """The same call id three times: each start gets an id of its own at once (the third used to spin
    on the broker for as long as the second's record lived)."""
    from callsense.service.gateway import Gateway

    async def scenario():
        gateway = Gateway(cluster_settings)
        ids = [await asyncio.wait_for(gateway._reserve("dup"), 5) for _ in range(3)]
        await gateway.redis.aclose()
        return ids

    ids = asyncio.run(scenario())
    assert ids[0] == "dup" and len(set(ids)) == 3 and all(i.startswith("dup-") for i in ids[1:])
    # a reservation no worker took lapses (a gateway that died between reserving and submitting)
    import redis

    conn = redis.Redis.from_url(cluster_settings.cluster.broker)
    assert 0 < conn.ttl(b.call_key("dup")) <= cluster_settings.cluster.assign_timeout_s + 30


def test_a_cluster_process_without_a_secret_says_how_to_set_one(settings, monkeypatch):
    from callsense.service.worker import Worker

    monkeypatch.delenv(b.SECRET_ENV, raising=False)
    settings.cluster.broker = "redis://127.0.0.1:1/0"
    with pytest.raises(SystemExit, match=b.SECRET_ENV):
        Worker(settings)
