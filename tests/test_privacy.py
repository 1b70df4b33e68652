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
