import json

import pytest

from callsense.reports.privacy import inn_ok, luhn_ok, redact, snils_ok


def test_card_numbers_need_a_valid_luhn():
    assert luhn_ok("4111 1111 1111 1111")
    assert not luhn_ok("4111 1111 1111 1112")
    text = "карта 4111 1111 1111 1111, а номер заказа 4111 1111 1111 1112"
    out = redact(text, "ru")
    assert "[CARD]" in out and "4111 1111 1111 1112" in out


def test_russian_identifiers_and_contacts():
    assert inn_ok("7707083893") and not inn_ok("7707083894")
    assert snils_ok("112-233-445 95") and not snils_ok("112-233-445 96")
    out = redact("ИНН 7707083893, СНИЛС 112-233-445 95, телефон +7 912 345-67-89, почта a.b@mail.ru", "ru")
    for label in ("[INN]", "[SNILS]", "[PHONE]", "[EMAIL]"):
        assert label in out
    assert "7707083893" not in out


def test_names_are_redacted():
    assert "Crystal" not in redact("Hi, my name is Crystal Minh and my card is blocked", "en")
    assert "Игорь" not in redact("Здравствуйте, меня зовут Игорь Петров", "ru")


def test_words_a_name_recogniser_takes_for_people_stay():
    """Hard negatives: a bank's name, greetings, profanity, «пожалуйста», a filler, a hint's numbers,
    weather on a street. An analyst reading the evidence must see what was said."""
    kept = [
        ("ru", "Я клиент Сбербанк, и сбербанк опять списал комиссию"),
        ("ru", "Приветик! Бля, хуйня какая-то. Забань его."),
        ("ru", "соедините меня, пожалуйста, с вашим руководителем"),
        ("ru", "Инвестиционный счёт открыт, а на улице такой снег"),
        ("en", "Y'know, I called yesterday about the fee"),
        ("en", "customer negative (arousal -0.07 → +0.65)"),
        ("en", "thanks pal, that helps"),
    ]
    for lang, text in kept:
        assert redact(text, lang) == text, text


def test_a_name_is_found_where_the_context_says_person():
    assert redact("uh hi mary this is about my card", "en") == "uh hi [NAME] this is about my card"
    assert "марина" not in redact("спасибо, марина, всё понятно", "ru")
    # a first name in another case, introduced by nothing but the sentence
    assert redact("Я говорил со Светой из вашего банка", "ru") == "Я говорил со [NAME] из вашего банка"
    assert redact("живу на улице Ленина, дом 5", "ru") == "живу на [ADDRESS]"
    # the recogniser's span takes the request with the name; only the name goes
    assert redact("Позовите Ивана Петровича к телефону", "ru") == "Позовите [NAME] к телефону"


@pytest.mark.parametrize(
    ("text", "value", "label"),
    [
        ("my number is 8-9-1-6-1-2-3-4-5-6-7, thanks", "8-9-1-6-1-2-3-4-5-6-7", "[PHONE]"),  # read digit by digit
        ("call me on 0-2-0-7-946, 0-5-8 please", "946", "[PHONE]"),
        ("номер 8, 9, 1, 6, 1, 2, 3, 4, 5, 6, 7", "4, 5, 6", "[PHONE]"),
        ("my number is 020 7946 0958", "7946 0958", "[PHONE]"),  # UK national formats
        ("mobile 07700 900123, any time", "900123", "[PHONE]"),
        ("the security code is 7-3-9", "7-3-9", "[CVV]"),
        ("the three digits on the back are 7 3 9", "7 3 9", "[CVV]"),
    ],
)
def test_numbers_in_every_form_whisper_writes_them(text, value, label):
    out = redact(text, "ru" if "номер" in text else "en")
    assert value not in out and label in out, out


@pytest.mark.parametrize(
    "text", ["it costs 5, 10 or 15 pounds", "the meeting is at 10-15 on 2024-05-03", "опция 1, 2 или 3"]
)
def test_small_numbers_in_a_row_are_not_personal_data(text):
    assert redact(text, "en") == text


def test_file_names_are_redacted_in_exports():
    from callsense.reports.privacy import redact_path

    out = redact_path("2026/12/call_+79161234567_Ivan-Petrov.json", "en")
    assert "79161234567" not in out and "Ivan" not in out and out.startswith("2026/12/call_") and out.endswith(".json")
    assert redact_path("batch-07/recording_0042.flac", "en") == "batch-07/recording_0042.flac"


def test_a_function_word_after_a_greeting_is_not_a_name():
    """ "My" is a first name in gender-guesser's list: "Hi, my name is John" kept "my" as [NAME]."""
    assert redact("Hi, my name is John. My card payment failed.", "en") == "Hi, my name is [NAME]. My card payment failed."
    assert redact("uh hi mary how are you", "en") == "uh hi [NAME] how are you"


def test_kept_audio_is_silenced_where_a_value_was_said_and_only_there(tmp_path):
    """The words that held a card number are silenced on both channels (with a little margin); the rest
    of the call, and a turn without personal data, keep their sound; the spool is gone."""
    import numpy as np
    import soundfile as sf

    from callsense.events import TranscriptFinal, Word
    from callsense.reports.audio_redaction import PAD_S, seal, spans_to_silence, spool_path

    said = ["My", "card", "is", "4111", "1111", "1111", "1111,", "thanks."]
    words = [Word(start=1.0 + 0.5 * i, end=1.4 + 0.5 * i, word=" " + w) for i, w in enumerate(said)]
    card = TranscriptFinal(speaker="ch1", role="customer", start=1.0, end=5.0, text=" ".join(said), words=words)
    plain = TranscriptFinal(speaker="ch0", role="operator", start=6.0, end=7.0, text="How can I help?", words=[])
    from callsense.reports.privacy import find_pii

    spans = spans_to_silence(card, find_pii(card.text, "en")) + spans_to_silence(plain, find_pii(plain.text, "en"))
    # from the end of the word before each to the start of the word after it
    assert spans == [(words[i - 1].end, words[i + 1].start) for i in range(3, 7)], spans

    rate = 16000
    tone = (0.3 * np.sin(np.arange(8 * rate) * 2 * np.pi * 200 / rate)).astype(np.float32)
    out = tmp_path / "call.flac"
    sf.write(spool_path(out), np.stack([tone, tone], axis=1), rate, format="FLAC")
    note = seal(spool_path(out), out, spans)
    kept, _ = sf.read(out, dtype="float32", always_2d=True)
    assert not spool_path(out).exists() and note["kept"] and note["silenced_spans"] == 4

    def loud(a: float, b: float) -> float:
        return float(np.abs(kept[int(a * rate) : int(b * rate)]).max())

    assert loud(words[2].end - PAD_S, words[7].start + PAD_S) == 0.0, "the number is silent on both channels"
    assert loud(0.0, words[2].end - PAD_S - 0.05) > 0.2 and loud(words[7].start + PAD_S + 0.05, 8.0) > 0.2


def test_a_long_number_no_rule_names_is_still_silenced_in_kept_audio():
    """A number ASR got slightly wrong (nine digits of a ten-digit phone) or one begun in the previous
    turn: the text rules may not name it, the audio still carries it whole; a short amount stays."""
    from callsense.events import TranscriptFinal, Word
    from callsense.reports.audio_redaction import spans_to_silence

    said = ["Call", "me", "on", "415", "550", "132,", "the", "fee", "was", "35."]
    words = [Word(start=1.0 + 0.5 * i, end=1.4 + 0.5 * i, word=" " + w) for i, w in enumerate(said)]
    fin = TranscriptFinal(speaker="ch1", role="customer", start=1.0, end=6.0, text=" ".join(said), words=words)
    spans = spans_to_silence(fin, [])
    assert spans == [(words[i - 1].end, words[i + 1].start) for i in range(3, 6)], spans


def test_a_turn_whose_words_cannot_be_placed_is_silenced_whole():
    from callsense.events import TranscriptFinal, Word
    from callsense.reports.audio_redaction import spans_to_silence
    from callsense.reports.privacy import find_pii

    odd = [Word(start=2.0, end=2.5, word=" something"), Word(start=2.5, end=3.0, word=" else")]
    fin = TranscriptFinal(speaker="ch1", role="customer", start=2.0, end=4.0, text="card 4111 1111 1111 1111", words=odd)
    assert spans_to_silence(fin, find_pii(fin.text, "en")) == [(2.0, 4.0)]


def test_a_number_read_over_two_turns_is_redacted_in_both():
    """ASR ends a turn at a pause in the middle of a card number: the first half goes with its cue, the
    second as its continuation (the speaker's previous turn); the other party's turn between, and a turn
    that only starts with a number, are read on their own."""
    from callsense.events import TranscriptFinal
    from callsense.reports.privacy import redact_events

    def final(i: int, speaker: str, text: str, revision: int = 0) -> TranscriptFinal:
        role = "customer" if speaker == "ch1" else "operator"
        return TranscriptFinal(
            speaker=speaker, role=role, start=i, end=i + 1, text=text, utterance_id=f"u{i}", revision=revision
        )

    events = [
        final(0, "ch1", "My card number is 4111 1111"),
        final(1, "ch0", "Go on."),
        final(2, "ch1", "1111 1111, that's it."),
        final(3, "ch1", "2024 was a bad year for me."),
        final(2, "ch1", "1111 1111 that's it", revision=1),
    ]
    texts = [e.text for e in redact_events(events)]
    assert "4111" not in texts[0] and texts[0].startswith("My card number is [CARD]"), texts[0]
    assert texts[1] == "Go on."
    assert "1111" not in texts[2] and texts[2].startswith("[CARD]"), texts[2]
    assert texts[3] == "2024 was a bad year for me.", "a year after a sentence is no continuation"
    assert "1111" not in texts[4], "a revised turn is read after what preceded its live version"
    ru = redact_events([final(0, "ch1", "Номер карты 5469 3800"), final(1, "ch1", "1234 5678")], "ru")
    assert "5469" not in ru[0].text and "5678" not in ru[1].text, [e.text for e in ru]
    assert redact("My card ending in 1234 was blocked.") == "My card ending in 1234 was blocked."


def test_a_spool_cut_mid_write_is_deleted_not_kept(tmp_path):
    """A process killed mid-call can leave a spool libsndfile cannot read: nothing unredacted may stay."""
    from callsense.reports.audio_redaction import seal_interrupted, spool_path

    out = tmp_path / "call.flac"
    spool_path(out).write_bytes(b"fLaC" + b"\x00" * 64)
    note = seal_interrupted(spool_path(out), out, [])
    assert note == {"kept": False, "silenced_spans": 0, "silenced_s": 0.0}
    assert not spool_path(out).exists() and not out.exists()
    assert seal_interrupted(spool_path(out), out, []) is None, "no spool: nothing to do"


def test_a_value_once_found_is_redacted_where_its_cue_is_missing():
    """A revised turn worded otherwise ("date on birth"), a later mention without the cue, a hint's quote:
    the value found earlier in the call is redacted there too, and its words are silenced in kept audio."""
    from callsense.events import Hint, TranscriptFinal
    from callsense.reports.privacy import Redactor

    live = TranscriptFinal(
        speaker="ch1", role="customer", start=1.0, end=5.0, text="My code word is blue river.", utterance_id="u1"
    )
    revised = live.model_copy(update={"text": "My code, word, blue river.", "revision": 1})
    later = TranscriptFinal(speaker="ch1", role="customer", start=6.0, end=8.0, text="Blue River, yes.", utterance_id="u2")
    hint = Hint(hint_id="h1", severity="warning", reason="x", title="t", evidence={"quote": "blue river, yes"})
    red = Redactor("en")
    out = red([live, revised, later, hint])
    assert all("blue river" not in json.dumps(ev.model_dump()).lower() for ev in out), out
    assert red.found["u2"] and red.found["u2"][0][:2] == (0, 10)  # for the kept audio's silence


def test_a_value_found_only_in_a_later_turn_leaves_the_earlier_turns_too(tmp_path):
    """ "Zabrinsky here" has no cue; "my surname is Zabrinsky", later, has one. The report's redaction
    and the store's rows (written live, before the value was known) both lose it, and the old bytes
    do not stay in the database file."""
    from callsense.events import TranscriptFinal
    from callsense.reports.privacy import Redactor, redact_events
    from callsense.reports.store import Store
    from callsense.service.calls import redact_stored_again

    def final(seq: int, text: str) -> TranscriptFinal:
        return TranscriptFinal(
            seq=seq, call_id="c1", speaker="ch1", role="customer", start=seq, end=seq + 1, text=text, utterance_id=f"u{seq}"
        )

    first, then = final(1, "Zabrinsky here, about my card."), final(2, "My surname is Zabrinsky.")
    assert all("Zabrinsky" not in ev.text for ev in redact_events([first, then])), "the report's one pass"
    store, red = Store(tmp_path / "calls.sqlite"), Redactor("en")
    store.open_call("c1", "test", "op-1")
    for ev in (first, then):  # live: each row as it was redacted then
        store.append_events("c1", red([ev]))
    assert "Zabrinsky" in store.events("c1")[0].text, "the case: the first row went to disk with the value"
    assert redact_stored_again(store, "c1", red) == 1
    assert all("Zabrinsky" not in ev.text for ev in store.events("c1"))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    assert b"Zabrinsky here" not in (tmp_path / "calls.sqlite").read_bytes()
