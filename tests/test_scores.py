"""Two scores, two purposes: operator conduct uses evidence only; the report flags what a reader must know."""

from __future__ import annotations

from callsense.events import CallEnded, CallStarted, Emotion, Event, Risk, Sequencer, TranscriptFinal
from callsense.reports.report import build_report


def _call(
    turns: list[tuple[str, str]],
    valence: float = 0.0,
    language: str = "ru",
    confidence: float = 1.0,
    frustration: float = 0.1,
) -> list[Event]:
    """A call whose customer reads `valence` throughout and whose customer state stays at `frustration`."""
    seq = Sequencer("c1")
    events: list[Event] = [seq.stamp(CallStarted(sample_rate=16000, channels=["operator", "customer"]))]
    positive = max(0.0, valence)
    for i, (role, text) in enumerate(turns):
        fin = TranscriptFinal(
            speaker=role,
            role=role,
            start=i * 4.0,
            end=i * 4.0 + 3,
            text=text,
            language=language,
            utterance_id=f"u{i}",
            role_confidence=confidence,
        )
        emo = Emotion(
            speaker=role,
            role=role,
            utterance_id=f"u{i}",
            start=fin.start,
            end=fin.end,
            valence=valence,
            arousal=0.0,
            label="neutral",
            confidence=0.9,
            evidence={"text": {"sentiment": {"positive": positive, "negative": max(0.0, -valence)}}},
        )
        events += [seq.stamp(fin), seq.stamp(emo)]
        if role == "customer":
            events.append(seq.stamp(Risk(level=frustration, frustration=frustration, t=fin.end)))
    events.append(seq.stamp(CallEnded(duration_s=len(turns) * 4.0)))
    return events


CALL = [
    ("operator", "Здравствуйте, банк Восток, меня зовут Анна, разговор записывается."),
    ("customer", "Хочу узнать остаток."),
    ("operator", "Остаток двенадцать тысяч. Могу ещё чем-то помочь?"),
    ("customer", "Нет, спасибо."),
    ("operator", "Спасибо."),
]


def test_operator_conduct_does_not_move_with_the_customers_emotion(settings):
    happy = build_report(_call(CALL, valence=0.8, frustration=0.05), settings)["scores"]
    angry = build_report(_call(CALL, valence=-0.9, frustration=0.7), settings)["scores"]
    assert happy["operator_conduct"] == angry["operator_conduct"]
    assert happy["operator_conduct"]["uses_emotion"] is False
    assert happy["customer_experience"]["score"] > angry["customer_experience"]["score"]


def test_farewell_needs_a_farewell_not_any_thanks(settings):
    def farewell(turns: list[tuple[str, str]]) -> bool:
        checks = build_report(_call(turns), settings)["compliance"]
        return next(c["passed"] for c in checks if c["id"] == "farewell")

    assert not farewell(CALL)
    assert farewell([*CALL[:-1], ("operator", "Спасибо за звонок, всего доброго!")])


def test_silent_call_is_flagged_not_scored(settings):
    report = build_report(_call([]), settings)
    assert report["scores"] == {"customer_experience": None, "operator_conduct": None}
    assert [f["flag"] for f in report["flags"]] == ["no_speech"]


def test_guessed_roles_are_flagged_and_the_summary_speaks_the_calls_language(settings):
    report = build_report(_call(CALL, confidence=0.55), settings)
    assert any(f["flag"] == "roles_guessed" and f["min_confidence"] == 0.55 for f in report["flags"])
    assert report["customer_summary"].startswith("Ваш звонок")
    english = build_report(
        _call([("operator", "Hello, how can I help?"), ("customer", "Balance please.")], language="en"), settings
    )
    assert english["customer_summary"].startswith("Your call")


def test_word_error_rate_scores_numbers_spelled_out():
    """Whisper wrote "134" where the Harper Valley transcript spells the number; scored as written, one
    number was five errors. Spelled out, only the words that differ count."""
    import jiwer

    from callsense.bench.wer import normalize

    ref = normalize("alright your balance is a hundred and thirty four dollars")
    assert jiwer.wer(ref, normalize("Alright, your balance is 134 dollars.")) == 1 / 10  # "one" for "a"
    assert normalize("Перевод на 135 рублей") == "перевод на сто тридцать пять рублей"
    assert normalize("Monday at 11 a.m., the 21st") == "monday at eleven a m the twenty first"
