import json
import re

import numpy as np
import pytest

from callsense.config import HintSettings
from callsense.events import TranscriptFinal
from callsense.stages.hints import HintEngine


def _final(role, text, start, lang="ru", seconds=2.0):
    return TranscriptFinal(
        speaker=role, role=role, start=start, end=start + seconds, text=text, language=lang, utterance_id=f"u{start:g}"
    )


def _run(turns, lang="ru", **settings):
    engine = HintEngine(HintSettings(**settings), language=lang)
    hints = []
    for i, (role, text) in enumerate(turns):
        hints += engine.on_final(_final(role, text, i * 4.0, lang))
    return hints


def test_russian_escalation_intents_fire_with_filled_phrases():
    hints = _run(
        [
            ("operator", "Добрый день, банк Восток, меня зовут Анна. Чем могу помочь?"),
            ("customer", "Меня зовут Игорь Петров. У меня проблема с переводом на карту сестры."),
            ("customer", "Я уже третий раз звоню по этому вопросу!"),
            ("customer", "Позовите вашего руководителя, я буду жаловаться в Центробанк."),
        ]
    )
    reasons = {h.reason for h in hints}
    assert {"repeat_caller", "supervisor_request", "complaint_threat"} <= reasons
    critical = [h for h in hints if h.severity == "critical"]
    assert critical and all(h.to_supervisor for h in critical)
    sup = next(h for h in hints if h.reason == "supervisor_request")
    # the customer gave a first name and a surname: a bank addresses by name and patronymic, never by surname
    assert sup.phrases and not any("Петров" in p or "Игорь" in p for p in sup.phrases)
    assert "руководител" in sup.evidence["quote"].lower()
    # the card speaks the call's language: its title and its phrases
    assert sup.title.startswith("клиент сказал") and all(re.search("[а-я]", h.title) for h in hints)


def test_every_hint_title_is_written_in_both_languages():
    from callsense.config import CONFIG_DIR
    from callsense.service.console import REASON_WORDS
    from callsense.stages.phrases import load_playbook

    for language in ("en", "ru"):
        titles = load_playbook(CONFIG_DIR / "playbooks", language).titles
        assert set(REASON_WORDS) <= set(titles), (language, set(REASON_WORDS) - set(titles))


def test_calm_call_and_operator_apology_raise_nothing():
    hints = _run(
        [
            ("operator", "Здравствуйте, банк Восток, меня зовут Анна."),
            ("customer", "Добрый день, хочу узнать остаток по вкладу."),
            ("operator", "Извините за ожидание, приношу извинения за неудобства. Остаток сорок тысяч рублей."),
            ("customer", "Спасибо, всё понятно."),
            ("operator", "Могу ли я ещё чем-то помочь? Всего доброго!"),
        ]
    )
    assert hints == []


def test_english_close_account_and_cooldown():
    hints = _run(
        [
            ("customer", "I want to close my account today."),
            ("customer", "Seriously, close my account."),
        ],
        lang="en",
        cooldown_s=30,
    )
    assert [h.reason for h in hints] == ["close_account"]  # the second is within the cooldown
    assert all("{" not in p for p in hints[0].phrases)  # no unfilled placeholders


def test_placeholders_are_never_left_unfilled():
    engine = HintEngine(HintSettings(), language="en")
    assert all("{" not in p for p in engine.phrases("customer_frustrated", k=5))
    engine.on_final(_final("customer", "Hi, my name is Jane Doe and my card payment failed", 0.0, "en"))
    assert any(p.startswith("Jane, ") and "card" in p for p in engine.phrases("customer_frustrated", k=5))
    assert not any("Doe" in p or "payment failed" in p for p in engine.phrases("customer_frustrated", k=5))


def test_operator_red_flag_is_a_warning_for_the_operator():
    hints = _run([("operator", "Успокойтесь, это не мои проблемы.")])
    assert [h.reason for h in hints] == ["operator_tone"]


@pytest.mark.slow
def test_chat_transcript_analysis(settings, data, tmp_path):
    from callsense.reports.report import analyze_dialogue

    dialogue = {
        "language": "en",
        "turns": [
            {"role": "operator", "text": "Thank you for calling, my name is Sam. How can I help?"},
            {"role": "customer", "text": "I've called three times about a double charge on my card and nobody fixed it."},
            {"role": "customer", "text": "I want to speak to a manager right now."},
        ],
    }
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(dialogue))
    events = analyze_dialogue(path, settings)
    kinds = [e.type for e in events]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended"
    assert kinds.count("emotion") == 3
    reasons = {e.reason for e in events if e.type == "hint"}
    assert {"repeat_caller", "supervisor_request"} <= reasons
    # ABCD's own format is accepted too
    abcd = analyze_dialogue(data / "dialogues" / "en_abcd_sample" / "abcd_sample.json", settings)
    assert sum(e.type == "transcript_final" for e in abcd) > 5


@pytest.mark.slow
def test_paraphrased_intents_and_operator_red_flags_via_the_classifier():
    from callsense.stages.text_emotion import embed_texts

    engine = HintEngine(HintSettings(), language="en", embed=embed_texts)
    got = []
    for i, (role, text) in enumerate(
        [
            ("customer", "Honestly, I'm closing my account."),
            ("operator", "Sorry, there's nothing more I can do."),
            ("customer", "Закрываю счёт, хватит с меня."),
        ]
    ):
        got += [h.reason for h in engine.on_final(_final(role, text, i * 30.0, "en"))]
    assert got[:2] == ["close_account", "operator_tone"]
    calm = HintEngine(HintSettings(), language="en", embed=embed_texts)
    for i, text in enumerate(
        [
            "Hi, I'd like to check my balance.",
            "Could you close the ticket once it's done?",
            "My phone number is five five five two three four.",
        ]
    ):
        assert calm.on_final(_final("customer", text, i * 30.0, "en")) == []


def test_hold_is_announced_while_it_lasts():
    engine = HintEngine(HintSettings(silence_hold_s=10), language="en")
    engine.on_final(_final("operator", "Please hold while I check.", 0.0, "en"))  # ends at 2.0
    assert engine.tick(8.0, speaking=False) == []
    during = engine.tick(12.5, speaking=False)
    assert [h.reason for h in during] == ["long_silence"] and during[0].evidence["silence_s"] == 10.5
    assert engine.tick(20.0, speaking=False) == []  # once per hold
    assert engine.tick(30.0, speaking=True) == []


@pytest.mark.slow
def test_intent_examples_are_embedded_once_per_embedder(tmp_path, monkeypatch):
    """A new process reads the examples' vectors from the cache folder and fits the same classifier."""
    from callsense.config import ModelSettings
    from callsense.stages import intents
    from callsense.stages.text_emotion import TextEmbedder

    monkeypatch.setenv("CALLSENSE_HOME", str(tmp_path))
    directory, embedder = HintSettings().intents_dir, TextEmbedder(ModelSettings())
    calls: list[int] = []

    def counting(texts: list[str]):
        calls.append(len(texts))
        return embedder(texts)

    counting.identity = embedder.identity  # type: ignore[attr-defined]
    probes = ["I want to close my account right now.", "Could you tell me my balance?"]
    fitted = []
    for _ in range(2):  # the second time stands for a new process: the in-process cache emptied
        monkeypatch.setattr(intents, "_classifiers", {})
        fitted.append(intents.classifier_for(directory, "customer", counting).probabilities(probes))
    assert len(list((tmp_path / "intents").glob("*.npy"))) == 1
    assert calls[0] > 50 and calls[1:] == [len(probes)] * 2  # the examples once, then the probes only
    np.testing.assert_allclose(fitted[0], fitted[1], atol=1e-6)


def test_raised_voice_needs_more_than_one_loud_word(models):
    """EmoDB's angry sentences against each speaker's neutral ones: the loudest 0.4 s of a sentence (one
    stressed word, as a caller's closing "Bye!") reads several sd louder than sentences do, and must not
    raise a warning; the whole sentence 10 dB louder than the speaker's usual level must."""
    import copy
    from pathlib import Path

    from callsense.audio.files import read_audio
    from callsense.config import EmotionSettings
    from callsense.stages.fusion import Fuser

    wavs = Path(__file__).parent / "data" / "emotion_speech" / "de_emodb" / "wav"
    voice = models.speech_emotion
    fired: dict[str, list[bool]] = {"word": [], "sentence": []}
    old_rule_word = 0
    for speaker in sorted({p.name[:2] for p in wavs.glob("*.flac")}):
        baseline = voice.new_baseline()
        for p in sorted(wavs.glob(f"{speaker}*N*.flac")):
            voice.score_turn(read_audio(p)[0], baseline)
        for p in sorted(wavs.glob(f"{speaker}*W*.flac")):
            audio = read_audio(p)[0]
            n = int(0.4 * 16000)
            loudest = int(np.argmax(np.convolve(audio**2, np.ones(n), "valid")))
            for kind, turn in (("word", audio[loudest : loudest + n]), ("sentence", 3.0 * audio)):
                scored = voice.score_turn(turn, copy.deepcopy(baseline))
                assert scored is not None
                emo = Fuser(EmotionSettings()).fuse("ch1", "customer", 0.0, 2.0, "u1", "", None, scored[0])
                old_rule_word += kind == "word" and scored[0].z["loudness_db"] >= 2 and emo.arousal > 0.3
                hints = HintEngine(HintSettings(), language="de").on_emotion(emo)
                fired[kind].append(any(h.reason == "raised_voice" for h in hints))
    assert old_rule_word >= 1  # level and arousal alone would have fired on a single word
    assert not any(fired["word"])
    assert sum(fired["sentence"]) >= len(fired["sentence"]) / 2


def test_delivery_cues_come_from_the_operators_own_turns_quietly():
    """Pace against the operator's own usual pace, a long monologue, the talk ratio: info cues with their
    numbers, one per delivery cooldown; the customer's turns never make one."""
    settings = HintSettings(delivery={"cooldown_s": 30.0, "monologue_s": 40.0, "talk_ratio_after_s": 60.0})
    engine = HintEngine(settings, language="en")
    usual = "I will look at the payment and the fee on your card right now for you"  # 16 words in 6 s
    got = []
    for i in range(3):
        got += engine.on_final(_final("operator", usual, 10.0 * i, "en", seconds=6.0))
        got += engine.on_final(_final("customer", "Okay, thank you.", 10.0 * i + 7, "en"))
    assert got == [], "the operator's own usual pace is no cue"
    fast = engine.on_final(_final("operator", usual + " " + usual, 40.0, "en", seconds=5.0))  # 32 words in 5 s
    assert [(h.reason, h.severity) for h in fast] == [("operator_pace", "info")]
    assert fast[0].evidence["rate"] == 6.4 and "6.4 words/s" in fast[0].title
    # the operator goes on without the customer: a monologue, but not within the cooldown of the last cue
    for start in (46.0, 53.0, 60.0, 67.0):
        assert engine.on_final(_final("operator", usual, start, "en", seconds=6.0)) == []
    later = engine.on_final(_final("operator", usual, 74.0, "en", seconds=6.0))
    assert [h.reason for h in later] == ["operator_monologue"] and later[0].evidence["seconds"] >= 40
    assert not [h for h in later if h.severity != "info"]
    ratio = engine.on_final(_final("operator", usual, 120.0, "en", seconds=6.0))
    assert [h.reason for h in ratio] == ["talk_ratio"], "held back by the cooldown, not lost"
    assert ratio[0].evidence["percent"] >= 70


def test_a_silence_after_an_announced_hold_reads_differently():
    announced = HintEngine(HintSettings(silence_hold_s=10), language="en")
    announced.on_final(_final("operator", "One moment, please hold.", 0.0, "en"))
    (hold,) = announced.tick(12.5, speaking=False)
    assert hold.evidence["hold_announced"] and "no hold announced" not in hold.title
    silent = HintEngine(HintSettings(silence_hold_s=10), language="en")
    silent.on_final(_final("operator", "Your card is blocked.", 0.0, "en"))
    (gap,) = silent.tick(12.5, speaking=False)
    assert not gap.evidence["hold_announced"] and "no hold announced" in gap.title


def test_a_recordings_silences_are_found_between_its_turns_in_their_language():
    """A recording's finals come in packs, each channel's in turn and long after their words: the clock
    cannot tell a silence there. Found at the end between both parties' turns, a gap the other party
    filled is no silence, and the card speaks the call's language and knows whether a hold was announced."""
    engine = HintEngine(HintSettings(silence_hold_s=10), language="en", silence_at_end=True)
    operator = [
        _final("operator", "Здравствуйте, чем могу помочь?", 0.0),
        _final("operator", "Минуточку, оставайтесь на линии.", 20.0),
        _final("operator", "Спасибо за ожидание.", 40.0),
        _final("operator", "Проверяю.", 55.0),
    ]
    customer = [_final("customer", "У меня списали деньги дважды, помогите разобраться.", 4.0, seconds=14.0)]
    for fin in operator + customer:  # one channel's pack, then the other's
        engine.on_final(fin)
        assert engine.tick(fin.end + 30.0, speaking=False) == []  # the clock says nothing in a recording
    holds = engine.flush()
    assert [h.evidence["since"] for h in holds] == [22.0, 42.0]  # 0-2 and 4-18 are one stretch of speech
    assert [h.evidence["hold_announced"] for h in holds] == [True, False]
    assert all(re.search("[а-я]", h.title) and not h.evidence["ongoing"] for h in holds)


def test_a_customer_turn_decoded_late_still_ends_the_operators_stretch():
    """Each channel's finals come when they are decoded: the customer's word inside the operator's stretch
    breaks it even when its final arrives after the operator's next one."""

    def stretch(customer_late: bool) -> list[str]:
        engine = HintEngine(HintSettings(delivery={"monologue_s": 45.0}), language="en")
        reasons = []
        for fin in (
            _final("operator", "Let me read you the terms of the new account in full now.", 0.0, "en", seconds=20.0),
            _final("operator", "The second part is about the fees and the limits on it.", 21.0, "en", seconds=20.0),
            *([_final("customer", "Right.", 20.2, "en", seconds=0.6)] if customer_late else []),
            _final("operator", "And the third part is about closing it if you wish.", 42.0, "en", seconds=8.0),
        ):
            reasons += [h.reason for h in engine.on_final(fin)]
        return reasons

    assert "operator_monologue" in stretch(customer_late=False)
    assert "operator_monologue" not in stretch(customer_late=True)
