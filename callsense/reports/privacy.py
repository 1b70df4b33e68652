"""Personal data redaction for transcripts in reports and stored results.

Structured identifiers are found by pattern and confirmed by their check digits where they have
one (card numbers by Luhn, INN and SNILS by their control sums), so a random number is not
redacted as a card. Person names: natasha's NER for Russian when installed; for English, names
introduced in the conversation ("my name is ...", "Mr ...").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from callsense.events import Event

DIGITS = re.compile(r"\D")


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
        return (ctrl([7, 2, 4, 10, 3, 5, 9, 4, 6, 8], 10) == d[10]
                and ctrl([3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8], 11) == d[11])
    return False


def snils_ok(number: str) -> bool:
    d = [int(x) for x in DIGITS.sub("", number)]
    if len(d) != 11:
        return False
    s = sum(x * (9 - i) for i, x in enumerate(d[:9]))
    check = s % 101 % 100
    return check == d[9] * 10 + d[10]


# (label, pattern, validator) - the order matters: longer, checked identifiers first.
RULES: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), None),
    ("CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), luhn_ok),
    ("ACCOUNT", re.compile(r"\b\d{5}[ .]?\d{3}[ .]?\d[ .]?\d{4}[ .]?\d{7}\b"), None),  # 20-digit RU account
    ("SNILS", re.compile(r"\b\d{3}-\d{3}-\d{3}[ -]\d{2}\b|\b\d{11}\b"), snils_ok),
    ("INN", re.compile(r"\b\d{12}\b|\b\d{10}\b"), inn_ok),
    ("PASSPORT", re.compile(r"(?i)(?:паспорт\w*|passport)[^\d]{0,20}(\d{2}\s?\d{2}\s?\d{6}|[A-Z]{1,2}\d{6,8})"), None),
    ("PHONE", re.compile(r"(?<!\d)(?:\+?\d{1,3}[\s-]?)?\(?\d{3}\)?[\s-]?\d{3}[\s-]?\d{2}[\s-]?\d{2}(?!\d)"), None),
    ("NAME", re.compile(r"(?i:my name is|this is|mr\.?|mrs\.?|ms\.?|меня зовут)\s+"
                        r"([A-ZА-ЯЁ][a-zа-яё]+(?:\s+[A-ZА-ЯЁ][a-zа-яё]+)?)"), None),
]


@lru_cache(maxsize=1)
def _natasha() -> tuple | None:
    try:
        from natasha import NewsEmbedding, NewsNERTagger, Segmenter
    except ImportError:
        return None
    return Segmenter(), NewsNERTagger(NewsEmbedding())


def _russian_names(text: str) -> list[tuple[int, int]]:
    tools = _natasha()
    if tools is None:
        return []
    from natasha import Doc

    segmenter, tagger = tools
    doc = Doc(text)
    doc.segment(segmenter)
    doc.tag_ner(tagger)
    return [(s.start, s.stop) for s in doc.spans if s.type == "PER"]


def find_pii(text: str, language: str = "en") -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in spans)

    for label, pattern, valid in RULES:
        for m in pattern.finditer(text):
            group = 1 if m.groups() else 0
            a, b = m.span(group)
            if (valid is None or valid(m.group(group))) and free(a, b):
                spans.append((a, b, label))
    if language.startswith("ru") or re.search(r"[А-Яа-яЁё]", text):
        for a, b in _russian_names(text):
            if free(a, b):
                spans.append((a, b, "NAME"))
    return sorted(spans)


def redact(text: str, language: str = "en") -> str:
    out, last = [], 0
    for a, b, label in find_pii(text, language):
        out.append(text[last:a])
        out.append(f"[{label}]")
        last = b
    out.append(text[last:])
    return "".join(out)


def _redact_value(value: Any, language: str) -> Any:
    if isinstance(value, str):
        return redact(value, language)
    if isinstance(value, dict):
        return {k: _redact_value(v, language) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, language) for v in value]
    return value


def redact_event(ev: Event, language: str = "en") -> Event:
    """A copy of the event with personal data redacted in every text it carries (transcript, quotes
    in evidence, hint titles). When a transcript's text changes, its per-word texts are dropped
    (their timings stay in start/end): a number read word by word must not survive in them."""
    update: dict[str, Any] = {}
    for name in ("text", "stable_text", "title", "message"):
        value = getattr(ev, name, None)
        if isinstance(value, str) and value:
            red = redact(value, language)
            if red != value:
                update[name] = red
    evidence = getattr(ev, "evidence", None)
    if evidence:
        update["evidence"] = _redact_value(evidence, language)
    if "text" in update and getattr(ev, "words", None):
        update["words"] = []
    return ev.model_copy(update=update) if update else ev
