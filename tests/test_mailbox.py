"""The server's queues: audio batching with backpressure, and slow consoles losing partials first."""

import asyncio

from callsense.events import TranscriptFinal, TranscriptPartial
from callsense.service.fanout import Console, FanOut
from callsense.service.mailbox import Mailbox


def test_mailbox_put_waits_for_space_and_take_while_batches():
    async def run() -> list:
        box = Mailbox(maxsize=2)
        await box.put(("audio", 1))
        await box.put(("audio", 2))
        blocked = asyncio.create_task(box.put(("end", None)))
        await asyncio.sleep(0.05)
        assert not blocked.done(), "a full mailbox holds the sender back"
        first = await box.get()
        await asyncio.wait_for(blocked, 1)
        batch = box.take_while(lambda item: item[0] == "audio")
        return [first, batch, await box.get(), len(box)]

    first, batch, last, left = asyncio.run(run())
    assert first == ("audio", 1) and batch == [("audio", 2)] and last == ("end", None) and left == 0


def _part(i: int) -> TranscriptPartial:
    return TranscriptPartial(speaker="ch0", start=0, end=1, text=f"p{i}", seq=i)


def _final(i: int) -> TranscriptFinal:
    return TranscriptFinal(speaker="ch0", start=0, end=1, text=f"f{i}", seq=i)


def test_slow_console_drops_partials_first_and_never_finals(settings):
    settings.server.console_queue = 3
    fanout = FanOut(settings.server, None, on_input=None)  # type: ignore[arg-type]
    console = Console(who="t", role="supervisor", operator_id=None)
    for ev in [_part(1), _final(2), _part(3), _part(4), _final(5)]:
        fanout.offer(console, ev)
    assert [e.text for e in console.queue.items] == ["f2", "f5"]
    assert console.dropped == 3 and not console.too_slow
    for i in (6, 7):
        fanout.offer(console, _final(i))
    assert console.too_slow, "finals are never dropped: a console that cannot take them is disconnected"
    assert [e.text for e in console.queue.items if e is not None] == ["f2", "f5", "f6"]
    assert console.queue.items[-1] is None


def test_a_call_inbox_is_bounded_in_seconds_of_audio_not_in_frames(settings):
    """Large 4-channel frames from a fast source: the inbox holds `call_queue_s` of audio (all channels
    counted), whatever the frames' size (200 frames of 5 s on 4 channels used to be 250 MB)."""
    import numpy as np

    from callsense.audio.codecs import AudioChunk
    from callsense.config import SAMPLE_RATE
    from callsense.service.calls import Audio, End, _samples

    settings.server.call_queue_s = 40.0

    async def run() -> tuple[int, bool, bool]:
        box = Mailbox(int(settings.server.call_queue_s * SAMPLE_RATE), _samples)
        frame = Audio(AudioChunk(np.zeros((4, 5 * SAMPLE_RATE), np.float32), 0.0), arrived=0.0)
        sent = 0
        while box.size < box.maxsize and sent <= 10:
            assert await box.put(frame)
            sent += 1
        put = asyncio.create_task(box.put(frame))
        for _ in range(5):
            await asyncio.sleep(0)
        blocked = not put.done()
        await box.get()  # the call takes a frame: the source may send again
        await asyncio.wait_for(put, 1)
        box.take_while(lambda _: True)
        return sent, blocked, box.size == 0 and await box.put(End("hangup"))

    sent, blocked, drained = asyncio.run(run())
    assert sent == 2 and blocked and drained  # 2 x 20 channel-seconds fill 40
