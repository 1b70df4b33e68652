"""The cluster's transport without models: messages survive the stream exactly, a gateway refuses a
call no worker takes, and a worker's writes are refused once another worker owns the call."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from callsense.audio.codecs import AudioChunk
from callsense.config import SAMPLES_DIR as SAMPLES
from callsense.events import TranscriptFinal
from callsense.service import broker as b
from callsense.service.calls import Audio, End, Feedback, SourceError

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
    for msg in (Feedback("h3", "accepted", "operator:op-1"), SourceError("bad_frame", "x"), End("hangup")):
        assert b.decode_message(_fields(b.encode_message(msg))) == msg


def test_events_keep_their_redacted_copy_and_arrival():
    ev = TranscriptFinal(call_id="c", seq=7, speaker="ch1", start=1.0, end=2.0, text="my card 4111 1111 1111 1111")
    red = ev.model_copy(update={"text": "my card [CARD]"})
    import json

    got = b.decode_event(json.loads(b.encode_event(ev, red)))
    assert got.event == ev and got.redacted.text == "my card [CARD]" and got.delivery_s >= 0


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

    settings.cluster.broker = local_redis.url
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
    assert publish(keys=keys, args=["w1", 100, 16000, 0.0, '{"seq": 1}', heard[1], "1-0", "{}"]) == 1
    assert [e[0].decode() for e in conn.xrange(b.input_key("c"))] == heard[1:]
    conn.hset(b.call_key("c"), "worker", "w2")  # w2 took it over
    assert publish(keys=keys, args=["w1", 100, 32000, 0.0, "", "0-0", "2-0", "{}"]) == -1
    assert conn.xlen(b.events_key("c")) == 1 and conn.hget(b.call_key("c"), "done") == b"16000"
