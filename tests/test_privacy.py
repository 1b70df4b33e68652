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
