"""Text normalisation for word error rate: case, punctuation, ё/е, hyphens, and numbers spelled out.

Whisper writes a number as digits or as words depending on its context ("134" alone, "a hundred and
thirty four" after the previous sentence), and transcripts spell them: scored as written, one number
counts as four or five errors of formatting, not of hearing. Digits are spelled out (num2words, in the
text's language) before scoring, as Whisper's own evaluation normalises numbers.
"""

from __future__ import annotations

import re

from num2words import num2words

_THOUSANDS = re.compile(r"(?<=\d)[,\u00a0 ](?=\d{3}\b)")
_NUMBER = re.compile(r"\d+(?:st|nd|rd|th)?\b|\d+")


def spell_numbers(text: str) -> str:
    """Digits as words: "134" -> "one hundred and thirty-four", "21st" -> "twenty-first", "135" in
    Russian text -> "сто тридцать пять" (nominative; a transcript's inflected form still differs)."""
    lang = "ru" if re.search(r"[а-яё]", text, re.IGNORECASE) else "en"

    def spell(m: re.Match[str]) -> str:
        digits = m.group().rstrip("stndrh")
        ordinal = lang == "en" and len(digits) < len(m.group())
        try:
            return f" {num2words(int(digits), lang=lang, to='ordinal' if ordinal else 'cardinal')} "
        except (OverflowError, NotImplementedError):  # longer than any number said on a call: as written
            return f" {digits} "

    return _NUMBER.sub(spell, _THOUSANDS.sub("", text))


def normalize(text: str) -> str:
    text = spell_numbers(text.lower().replace("ё", "е").replace("+", ""))
    text = re.sub(r"[^\w\s']|_", " ", text)
    return re.sub(r"\s+", " ", text).strip()
