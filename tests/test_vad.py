import numpy as np

from callsense.audio.files import read_audio
from callsense.audio.vad import Endpointer, SileroVAD


def _probs(audio, chunk):
    vad = SileroVAD()
    return np.concatenate([vad(audio[i : i + chunk]) for i in range(0, audio.size, chunk)])


def test_streaming_vad_does_not_depend_on_chunk_size(data):
    audio = read_audio(data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac")[0]
    a, b = _probs(audio, 1600), _probs(audio, 7777)
    assert a.shape == b.shape
    assert np.allclose(a, b, atol=1e-4)


def test_endpointer_finds_the_pauses_in_real_speech(data):
    audio = read_audio(data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac")[0]
    ep = Endpointer(0.5, 0.5)
    bounds = ep.update(_probs(audio, 1600))
    starts = [b for b in bounds if b.kind == "start"]
    ends = [b for b in bounds if b.kind == "end"]
    assert 3 <= len(starts) <= 6 and len(ends) >= len(starts) - 1
    assert starts[0].sample / 16000 < 0.6


def test_silence_has_no_speech(data):
    audio = read_audio(data / "asr" / "ru_phone_prompts" / "audio" / "silence__5.flac")[0]
    assert not Endpointer().update(_probs(audio, 1600))
