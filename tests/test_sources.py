import audioop  # reference G.711 codec from the standard library (deprecated, still in 3.11)
import base64
import json

import numpy as np
import pytest
import soundfile as sf

from callsense.audio.codecs import AudioError, decode_pcm, encode_mulaw
from callsense.audio.files import FileSource, probe, read_audio
from callsense.audio.protocols import AudioSocketProtocol, PlainProtocol, ProtocolError, TwilioProtocol


def test_g711_tables_match_reference():
    raw = bytes(range(256))
    ulaw = np.frombuffer(audioop.ulaw2lin(raw, 2), "<i2") / 32768
    alaw = np.frombuffer(audioop.alaw2lin(raw, 2), "<i2") / 32768
    assert np.array_equal(decode_pcm(raw, "mulaw")[0], ulaw.astype(np.float32))
    assert np.array_equal(decode_pcm(raw, "alaw")[0], alaw.astype(np.float32))


def test_mulaw_encoder_round_trips_real_speech(data):
    speech = read_audio(data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac")[0][:16000]
    back = decode_pcm(encode_mulaw(speech), "mulaw")[0]
    snr = 10 * np.log10(np.sum(speech**2) / np.sum((speech - back) ** 2))
    assert snr > 25  # G.711 gives about 38 dB on speech


def test_phone_audio_is_resampled_to_16k(data):
    path = data / "asr" / "en_phone_prompts" / "audio" / "vm-intro.flac"
    info = probe(path)
    assert info.sample_rate == 8000
    audio = read_audio(path)
    assert audio.shape[0] == 1
    assert abs(audio.shape[1] / 16000 - info.duration) < 0.01


def test_truncated_file_keeps_what_was_decoded(data, tmp_path):
    src = data / "asr" / "ru_read_msu" / "audio" / "ru_0001.flac"
    cut = tmp_path / "cut.flac"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    source = FileSource(cut)
    decoded = sum(c.audio.shape[1] for c in source) / 16000
    assert decoded > 2.0  # the first half is still there
    if source.error:  # libsndfile may or may not notice the cut; when it does we say so
        assert "decoding stopped" in source.error


def test_corrupt_and_empty_files_get_clear_errors(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    with pytest.raises(AudioError, match="cannot decode"):
        probe(junk)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio"):
        probe(empty)
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "missing.flac")


def test_plain_protocol_errors_do_not_end_the_stream():
    p = PlainProtocol()
    with pytest.raises(ProtocolError, match="before the start"):
        p.feed(b"\x00\x00")
    p.feed(
        json.dumps(
            {"type": "start", "call_id": "c", "sample_rate": 8000, "encoding": "s16le", "channels": ["operator", "customer"]}
        )
    )
    with pytest.raises(ProtocolError, match="whole number"):
        p.feed(b"\x00" * 6)  # 1.5 stereo frames
    chunks = p.feed(b"\x00" * 3200)  # 800 stereo frames at 8 kHz = 0.1 s
    total = sum(c.audio.shape[1] for c in chunks)
    assert all(c.audio.shape[0] == 2 for c in chunks)
    assert total <= 1600
    with pytest.raises(ProtocolError, match="not valid JSON"):
        p.feed("{oops")
    with pytest.raises(ProtocolError, match="sample_rate"):
        PlainProtocol().feed(json.dumps({"type": "start", "call_id": "c", "sample_rate": 123}))


def test_twilio_tracks_are_aligned_not_concatenated():
    p = TwilioProtocol()
    p.feed(json.dumps({"event": "connected"}))
    p.feed(
        json.dumps(
            {
                "event": "start",
                "start": {"callSid": "CA1", "tracks": ["inbound", "outbound"], "mediaFormat": {"sampleRate": 8000}},
            }
        )
    )
    assert p.start.roles == ["operator", "customer"]
    tone = (0.3 * np.sin(np.arange(1600) / 8000 * 2 * np.pi * 440)).astype(np.float32)
    payload = base64.b64encode(encode_mulaw(tone)).decode()
    out = p.feed(json.dumps({"event": "media", "media": {"track": "inbound", "payload": payload}}))
    out += p.feed(json.dumps({"event": "media", "media": {"track": "outbound", "payload": payload}}))
    out += p.feed(json.dumps({"event": "stop"}))
    samples = sum(c.audio.shape[1] for c in out)
    assert 2800 < samples <= 3200  # 0.2 s of call time at 16 kHz, not 0.4 s
    assert p.ended


def _twilio_start(p: TwilioProtocol, tracks: list[str]) -> None:
    start = {"callSid": "CA1", "tracks": tracks, "mediaFormat": {"sampleRate": 8000}}
    p.feed(json.dumps({"event": "start", "start": start}))


def test_a_twilio_stream_that_sends_one_of_its_two_tracks_is_heard_and_says_so():
    """A start announcing both tracks, then media for the inbound one only: the call used to wait for
    the other track forever (0 s processed, `clean: true`) and buffer without bound."""
    p = TwilioProtocol()
    _twilio_start(p, ["inbound", "outbound"])
    tone = (0.3 * np.sin(np.arange(160) / 8000 * 2 * np.pi * 440)).astype(np.float32)
    frame = json.dumps(
        {"event": "media", "media": {"track": "inbound", "payload": base64.b64encode(encode_mulaw(tone)).decode()}}
    )
    out = [c for _ in range(250) for c in p.feed(frame)]  # 5 s of 20 ms frames
    heard = sum(c.audio.shape[1] for c in out) / 16000
    assert heard >= 5.0 - TwilioProtocol.MAX_LEAD_S - 0.2, heard
    operator = np.concatenate([c.audio[0] for c in out])
    customer = np.concatenate([c.audio[1] for c in out])
    assert np.abs(operator).max() == 0 and np.abs(customer).max() > 0.1
    assert [code for code, _ in p.notices] == ["track_missing"], "said once"
    assert max(len(v) for v in p._pending.values()) <= 2, "buffers stay small"


def test_a_flood_before_the_audiosocket_uuid_ends_the_connection():
    """300 KB of empty audio frames before the uuid: a few notices, then the stream ends (it used
    to log each of 100,000 frames)."""
    parser = AudioSocketProtocol()
    flood = AudioSocketProtocol.frame(0x10) * 100_000
    for i in range(0, len(flood), 4096):
        parser.feed(flood[i : i + 4096])
        if parser.ended:
            break
    assert parser.ended and parser.start is None
    assert len(parser.notices) <= AudioSocketProtocol.PRE_UUID_FRAMES + 2
    assert "before the uuid" in parser.notices[-1][1]


def test_audiosocket_frames():
    frame = AudioSocketProtocol.frame
    parser = AudioSocketProtocol()
    stream = (
        frame(0x01, bytes(range(16)))
        + frame(0x10, b"\x00\x01" * 320)
        + frame(0x03, b"5")
        + frame(0x42, b"x")
        + frame(0x10, b"\x00\x01" * 320)
        + frame(0x00)
    )
    chunks = []
    for i in range(0, len(stream), 7):  # arbitrary TCP segmentation
        chunks += parser.feed(stream[i : i + 7])
    assert parser.start is not None and parser.start.call_id == bytes(range(16)).hex()
    assert parser.ended
    assert parser.dtmf == ["5"], "a DTMF digit is noted and does not end the call"
    assert [code for code, _ in parser.notices] == ["unknown_frame"], "an unknown kind is reported and skipped"
    # both audio frames arrived: 2 x 320 samples at 8 kHz -> about 1280 at 16 kHz (resampler tail included)
    assert 1100 < sum(c.audio.shape[1] for c in chunks) <= 1300
    early = AudioSocketProtocol()
    assert early.feed(frame(0x10, b"\x00\x01" * 10)) == [] and early.notices[0][0] == "not_started"
