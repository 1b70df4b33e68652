"""The process-wide admission to Whisper: finals first, optional decodes only on spare capacity."""

import threading
import time

import pytest

from callsense.stages.decode_gate import DecodeGate
from callsense.stages.whisper import WhisperDecoder


def _hold_final(gate: DecodeGate, entered: threading.Event, release: threading.Event) -> threading.Thread:
    def run() -> None:
        with gate.final():
            entered.set()
            release.wait(5)

    th = threading.Thread(target=run)
    th.start()
    return th


def test_optional_decodes_run_only_when_a_slot_stays_free_for_finals():
    gate = DecodeGate(2)
    with gate.optional() as admitted:
        assert admitted  # idle: a partial may run
    entered, release = threading.Event(), threading.Event()
    th = _hold_final(gate, entered, release)
    assert entered.wait(5)
    with gate.optional() as admitted:
        assert not admitted, "the second slot is kept for finals"
    assert gate.skipped == 1
    release.set()
    th.join(5)
    with gate.optional() as admitted:
        assert admitted
    assert gate.busy == 0


def test_a_waiting_final_goes_before_any_optional_decode():
    gate = DecodeGate(1)
    entered, release = threading.Event(), threading.Event()
    first = _hold_final(gate, entered, release)
    assert entered.wait(5)
    second_in, second_release = threading.Event(), threading.Event()
    second = _hold_final(gate, second_in, second_release)
    while gate.waiting == 0:  # the second final is queued behind the first
        time.sleep(0.01)
    release.set()
    first.join(5)
    assert second_in.wait(5), "the queued final got the slot"
    with gate.optional() as admitted:
        assert not admitted
    second_release.set()
    second.join(5)
    assert gate.busy == 0


# -- finals are batched within a latency budget (real decodes of real speech) --


def _clip(data, name="ru_0003.flac"):
    from callsense.audio.files import read_audio

    return read_audio(data / "asr" / "ru_read_msu" / "audio" / name)[0]


@pytest.mark.slow
def test_a_lone_final_waits_no_longer_than_its_budget_and_only_while_another_call_is_open(models, settings, data):
    gate = DecodeGate(1, batch_wait_s=0.3, max_batch=4)
    dec = WhisperDecoder(models.whisper, settings.asr, gate=gate)
    other = WhisperDecoder(models.whisper, settings.asr, gate=gate)  # another call, silent for now
    hyp = dec.decode(_clip(data), "ru", "final", 0.0)
    assert hyp is not None and hyp.text
    assert gate.stats.batches == 1 and 0.3 <= gate.stats.waited_s[0] < 0.5
    other.close()  # the other call ended: nobody can join, so nothing to wait for
    dec.decode(_clip(data), "ru", "final", 0.0)
    assert gate.stats.waited_s[1] < 0.1, "the only open call's final starts at once"


@pytest.mark.slow
def test_finals_of_two_calls_are_decoded_as_one_batch_with_the_same_words(models, settings, data):
    gate = DecodeGate(1, batch_wait_s=5.0, max_batch=2)
    calls = [WhisperDecoder(models.whisper, settings.asr, gate=gate) for _ in range(2)]
    clips = [_clip(data, "ru_0003.flac"), _clip(data, "ru_0002.flac")]
    out: dict[int, object] = {}

    def call(i: int) -> None:
        out[i] = calls[i].decode(clips[i], "ru", "final", 0.0)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    time.sleep(0.2)  # the second call's final comes a little later
    call(1)
    first.join(30)
    assert gate.stats.batches == 1 and gate.stats.items == 2
    assert gate.stats.waited_s[0] < 2.0, "a full batch starts without using up the budget"
    alone = [WhisperDecoder(models.whisper, settings.asr).decode(c, "ru", "final", 0.0) for c in clips]
    assert [out[0].text, out[1].text] == [a.text for a in alone], "company does not change the words"


@pytest.mark.slow
def test_a_batch_of_two_languages_is_encoded_once_and_each_piece_gets_its_own_words(models, settings, data):
    """Speakers whose language is still open batch together; a Russian and an English piece are
    detected apart, decoded in their own language from the one encoder pass, word for word as alone."""
    from callsense.audio.files import read_audio
    from callsense.stages.whisper import DecodeRequest

    clips = [_clip(data, "ru_0002.flac"), read_audio(data / "asr" / "en_faster_whisper_testdata" / "audio" / "jfk.flac")[0]]
    dec = WhisperDecoder(models.whisper, settings.asr)
    alone = [dec.decode_batch([DecodeRequest(c, None)])[0] for c in clips]
    passes = []
    encode = models.whisper.encode
    models.whisper.encode = lambda features: passes.append(features.shape[0]) or encode(features)
    try:
        both = dec.decode_batch([DecodeRequest(c, None) for c in clips])
    finally:
        del models.whisper.encode  # back to the class's method
    assert [h.language for h in both] == ["ru", "en"]
    assert [h.text for h in both] == [h.text for h in alone]
    assert passes == [2], "one encoder pass for the batch, none again per language"


def test_finals_prompted_with_different_histories_decode_in_one_batch(models, settings, data):
    """Live finals carry their speakers' previous words as prompts, of any length. CTranslate2 refused
    such a batch ("<|startoftranscript|> at the same position"), which failed every call in it under
    load. Each final now decodes as it would alone, whatever prompts it meets in its batch."""
    from callsense.stages.whisper import DecodeRequest

    said = [
        "Со спокойным мужеством он ожидал всего в этом безумном городе, и ничего не случилось.",
        "Он целует её в щёки, в лоб, в закрытые веки. Осенний ветер над Катей, лежащей в земле "
        "под крестом. Казалось, из чёрной бездны он сам теперь летел на них.",
    ]
    clips = [_clip(data, "ru_0002.flac"), _clip(data, "ru_0004.flac")]
    dec = WhisperDecoder(models.whisper, settings.asr)
    assert len({len(dec.fw.prompt_tokens(p)) for p in said}) == 2
    requests = [DecodeRequest(c, "ru", prompt=p) for c, p in zip(clips, said, strict=True)]
    alone = [dec.decode_batch([r])[0] for r in requests]
    together = dec.decode_batch(requests)
    assert all(h.text for h in together)
    assert [h.text for h in together] == [h.text for h in alone]
