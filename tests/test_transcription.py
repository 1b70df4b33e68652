import jiwer
import numpy as np
import pytest

from callsense.sources import FileSource, read_audio
from callsense.transcription import StreamingTranscriber, WhisperDecoder, agreed_prefix
from callsense.wer import normalize

pytestmark = pytest.mark.slow


def _stream(models, settings, path, language=None, partials=True):
    dec = WhisperDecoder(models.get("whisper"), settings.asr)
    tr = StreamingTranscriber(dec, settings.asr, "ch0", language=language)
    tr.skip_partials = not partials
    events = []
    for chunk in FileSource(path, chunk_ms=100):
        events += tr.push(chunk.audio.mean(axis=0))
    return tr, events + tr.flush()


def test_agreed_prefix_ignores_case_and_punctuation():
    assert agreed_prefix(["And", "so", "my"], ["and", "so,", "my", "fellow"]) == 3
    assert agreed_prefix(["ask", "not"], ["ask", "what"]) == 1


def test_streaming_english_matches_reference(models, settings, data):
    path = data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac"
    ref = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    tr, events = _stream(models, settings, path)
    finals = [e for e in events if e.type == "transcript_final"]
    partials = [e for e in events if e.type == "transcript_partial"]
    hyp = " ".join(f.text for f in finals)
    assert jiwer.wer(normalize(ref), normalize(hyp)) < 0.15
    assert partials, "partials are shown while the person speaks"
    assert tr.language == "en"
    words = [w for f in finals for w in f.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end <= 11.1


def test_russian_speech_is_detected_as_russian(models, settings, data):
    tr, events = _stream(models, settings, data / "asr" / "ru_read_msu" / "audio" / "ru_0003.flac", partials=False)
    finals = [e for e in events if e.type == "transcript_final"]
    assert finals and all(f.language == "ru" for f in finals)
    assert "городе" in " ".join(f.text for f in finals)


def test_silence_and_noise_produce_no_text(models, settings, data):
    silence = read_audio(data / "asr" / "ru_phone_prompts" / "audio" / "silence__10.flac")[0]
    noise = np.random.default_rng(0).normal(0, 0.01, 16000 * 5).astype(np.float32)
    dec = WhisperDecoder(models.get("whisper"), settings.asr)
    tr = StreamingTranscriber(dec, settings.asr, "ch0")
    events = tr.push(np.concatenate([silence, noise])) + tr.flush()
    assert [e for e in events if e.type == "transcript_final"] == []
