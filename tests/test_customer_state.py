"""The customer state: frustration builds up over turns, falls when the customer calms down, and cues
the operator once per episode; angry words without a request never make a critical hint."""

from __future__ import annotations

import pytest

from callsense.config import CustomerStateSettings, HintSettings
from callsense.events import Emotion, TranscriptFinal
from callsense.stages.customer_state import CustomerState, TurnEvidence
from callsense.stages.hints import HintEngine


def _evidence(negative: float, positive: float = 0.0, complaint: float = 0.0) -> TurnEvidence:
    return TurnEvidence("u", "", negative, positive, complaint)


def test_a_steady_complaint_builds_up_and_an_apology_and_fix_let_it_fall():
    cfg = CustomerStateSettings()
    state = CustomerState(cfg)
    mild = [state.push(_evidence(0.7)) for _ in range(5)]
    assert mild == sorted(mild) and mild[-1] > mild[0], "each further negative turn adds to the evidence"
    assert mild[0] < cfg.cue_probability <= mild[-1], "one mildly negative turn is no cue; a run of them is"
    calm = [state.push(_evidence(0.05, positive=0.8)) for _ in range(4)]
    assert calm == sorted(calm, reverse=True) and calm[-1] < cfg.rearm_probability, "calm turns let it fall"
    assert [x.negative for x in state.why()] == [0.7] * 3 and len(state.why()) == 3


def test_the_state_forgets_with_its_decay():
    quick = CustomerState(CustomerStateSettings(decay=0.2))
    slow = CustomerState(CustomerStateSettings(decay=0.9))
    for state in (quick, slow):
        state.push(_evidence(0.9))
        state.push(_evidence(0.1))
    assert slow.probability > quick.probability


def _final(text: str, i: int, lang: str) -> TranscriptFinal:
    return TranscriptFinal(
        speaker="ch1", role="customer", start=4.0 * i, end=4.0 * i + 3, text=text, language=lang, utterance_id=f"u{i}"
    )


def _emotion(fin: TranscriptFinal, negative: float, positive: float) -> Emotion:
    return Emotion(
        speaker="ch1",
        role="customer",
        utterance_id=fin.utterance_id,
        start=fin.start,
        end=fin.end,
        valence=positive - negative,
        arousal=0.0,
        label="neutral",
        confidence=0.9,
        evidence={
            "quote": fin.text,
            "text": {"sentiment": {"negative": negative, "positive": positive}, "negative_max": negative},
        },
    )


def test_the_operator_is_cued_once_per_episode_with_the_turns_that_show_it():
    engine = HintEngine(HintSettings(cooldown_s=0), language="en")
    said = [
        "It still does not work.",
        "I did everything you said.",
        "Nothing changed at all.",
        "Still the same error.",
        "Oh, now it works, thank you so much!",
        "Great, thanks.",
        "Everything is fine.",
        "All good.",
        "Wait, it broke again.",
        "Same error again.",
        "This keeps happening.",
        "Still broken.",
    ]
    moods = [(0.8, 0.0)] * 4 + [(0.0, 0.9)] * 4 + [(0.8, 0.0)] * 4
    cues = []
    for i, (text, (neg, pos)) in enumerate(zip(said, moods, strict=True)):
        fin = _final(text, i, "en")
        engine.on_final(fin)
        cues += [(i, h) for h in engine.on_emotion(_emotion(fin, neg, pos)) if h.reason == "customer_frustrated"]
    assert [i for i, _ in cues][:1] and all(i < 4 or i >= 8 for i, _ in cues)
    assert len([i for i, _ in cues if i < 4]) == 1 and len([i for i, _ in cues if i >= 8]) == 1, (
        "one cue per episode, a second only after the customer had calmed down"
    )
    first = cues[0][1]
    assert first.severity == "warning" and not first.to_supervisor and first.phrases
    assert 0 < first.evidence["probability"] <= 1 and first.evidence["turns"]
    assert all(t["quote"] in said[:4] for t in first.evidence["turns"])


def test_one_sharp_sentence_is_no_cue_a_second_one_is():
    """The cue needs frustration in more than one turn: mildly unhappy turns and one very negative sentence
    ("It didn't work again.") raise the probability past the cue's, yet stay quiet; a second negative
    turn soon after cues."""
    engine = HintEngine(HintSettings(cooldown_s=0), language="en")
    cfg = engine.settings.customer_state
    said = ["I need help.", "Hm, not great.", "That is a pity.", "It didn't work again.", "OK, I'll try.", "Still nothing."]
    negative = [0.45, 0.45, 0.45, 0.99, 0.3, 0.9]  # below, below, below, above, below, above cue_negative
    cued, high = [], []
    for i, (text, neg) in enumerate(zip(said, negative, strict=True)):
        fin = _final(text, i, "en")
        engine.on_final(fin)
        cued += [i for h in engine.on_emotion(_emotion(fin, neg, 0.0)) if h.reason == "customer_frustrated"]
        high += [i] if engine.customer.probability >= cfg.cue_probability else []
    assert 3 in high and 4 in high, "the probability alone would have cued at the sharp sentence"
    assert cued == [5], "no cue on one sharp sentence; one when frustration shows in a second turn"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("ru", "Какой ещё перевод? Я ничего не отправлял! Верните деньги немедленно."),
        ("ru", "Это безобразие, я жду уже сорок минут, и никто ничего не может объяснить!"),
        ("en", "This is absolutely ridiculous, I've been on hold forever and nothing is fixed!"),
        ("en", "Unlock my card right now, I made that payment myself!"),
    ],
)
def test_angry_words_without_a_request_make_no_critical_hint(models, lang, text):
    """Hard negatives: anger, even a demand, but nobody asked for a manager, threatened or closed anything."""
    from callsense.stages.text_emotion import TextEmbedder

    engine = HintEngine(HintSettings(), language=lang, embed=TextEmbedder())
    hints = engine.on_final(_final(text, 0, lang))
    assert not [h for h in hints if h.severity == "critical"], [h.title for h in hints]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lang", "text", "reason", "span"),
    [
        (
            "ru",
            "Мне всё это надоело. Соедините меня, пожалуйста, с вашим руководителем.",
            "supervisor_request",
            "руководител",
        ),
        (
            "en",
            "I'm fed up. I'd like to talk to whoever is in charge of your fraud team.",
            "supervisor_request",
            "in charge",
        ),
        ("en", "I have had enough of this. I am taking all my savings to another bank.", "close_account", "bank"),
    ],
)
def test_a_critical_hint_quotes_the_sentence_that_asked(models, lang, text, reason, span):
    from callsense.stages.text_emotion import TextEmbedder

    engine = HintEngine(HintSettings(), language=lang, embed=TextEmbedder())
    (hint,) = [h for h in engine.on_final(_final(text, 0, lang)) if h.severity == "critical"]
    assert hint.reason == reason and span in hint.evidence["quote"].lower()
    assert hint.evidence["quote"] in text and len(hint.evidence["quote"]) < len(text), "the sentence, not the turn"
