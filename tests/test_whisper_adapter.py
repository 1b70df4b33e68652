"""The contract with faster-whisper: every private or undocumented name callsense calls
(`stages/whisper_adapter.py`) exists with the arguments it is given, and a decode through them gives
words. A faster-whisper release that renames or reorders any of them fails here first."""

import numpy as np
import pytest

from callsense.audio.files import read_audio
from callsense.stages import whisper_adapter
from callsense.stages.whisper_adapter import FasterWhisper, contract_breaks


def test_the_installed_faster_whisper_has_every_name_callsense_calls():
    assert contract_breaks() == []


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (("faster_whisper.transcribe", "WhisperModel.get_prompt", ("self", "tokenizer", "prompt_tokens")), "takes"),
        (("faster_whisper.transcribe", "WhisperModel._split_into_segments", ("self",)), "AttributeError"),
        (("faster_whisper.no_such_module", "anything", ()), "ModuleNotFoundError"),
    ],
)
def test_a_changed_or_missing_name_is_reported_by_name(monkeypatch, entry, said):
    """What a release that renamed a parameter, a method or a module would look like to the check."""
    monkeypatch.setattr(whisper_adapter, "CONTRACT", [entry])
    (broken,) = contract_breaks()
    assert entry[1] in broken and said in broken


def test_a_decode_through_the_adapter_gives_timed_words_inside_the_audio(models, data):
    audio = read_audio(data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac")[0]
    seconds = audio.size / 16000
    fw = FasterWhisper(models.whisper)
    encoded, frames = fw.encode([audio])
    assert frames == [int(seconds * 100)] or abs(frames[0] - seconds * 100) <= 1
    (probs,) = fw.languages(encoded)
    assert max(probs, key=lambda lp: lp[1])[0] == "en"
    (decoded,) = fw.generate(encoded, frames, "en", [fw.prompt_tokens("")], 5, 200, 50)
    words = [w for seg in decoded.segments for w in seg.words]
    assert len(words) >= 10, "JFK's 11 s hold about 20 words"
    assert all(0.0 <= w.start <= w.end <= seconds + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert 0.0 < decoded.stopped_s <= seconds + 0.01
    assert all(seg.text.strip() and np.isfinite(seg.avg_logprob) for seg in decoded.segments)
    segments, language = fw.greedy(audio, "en", (0.6, -1.0, 2.4), 200)
    assert language == "en" and " ".join(s.text for s in segments).strip()
