"""A call summary an operator can paste into the ticket: why the customer called, what was done, what
was promised (with the times and amounts as said), what is still open - in the call's language.

Extractive, by rules over the transcript's sentences (pymorphy3 reads Russian verbs' tense, person and
aspect): every line is the customer's or the operator's own words, never generated text. What it cannot
do: paraphrase or merge, tell a promise the operator later withdrew, read an action that is said
without a verb of doing ("done, refunded" reads; "that's sorted" does not), or know what happened
outside the call. It is built from the call's record, so it is redacted like the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from callsense.events import TranscriptFinal

SENTENCE = re.compile(r"[^.!?…]+[.!?…]*")
MIN_WORDS = 3

# Why they called: a problem or a request (the first such sentence of the customer's)
REASON = re.compile(
    r"\b(fail\w*|charg\w*|fee|can'?t|cannot|not working|doesn'?t work|didn'?t|blocked|lost|stolen|wrong|error|"
    r"want|need|would like|problem|issue|help|refund|close|cancel|"
    r"списал\w*|не работает|не могу|не проход\w*|заблокир\w*|потерял\w*|украл\w*|ошибк\w*|хочу|нужно|нужен|"
    r"проблем\w*|помоги\w*|верн\w*|закры\w*|отмен\w*|комисси\w*)\b",
    re.IGNORECASE,
)
# What was done: the operator saying an action is complete
DONE_EN = re.compile(
    r"\b(i|we)(('ve| have)| just| already)?\s+(just\s+|already\s+)?(refunded|reversed|cancell?ed|blocked|unblocked|"
    r"sent|reset|updated|changed|raised|opened|filed|logged|credited|waived|issued|ordered|activated|closed|"
    r"submitted|escalated|transferred|booked|scheduled|added|removed|fixed|restored|replaced|registered)\b"
    r"|\b(has|have) been (refunded|reversed|cancell?ed|blocked|unblocked|sent|reset|updated|credited|waived|"
    r"issued|activated|closed|fixed|restored|replaced)\b",
    re.IGNORECASE,
)
DONE_RU = {
    "вернуть",
    "отменить",
    "заблокировать",
    "разблокировать",
    "отправить",
    "оформить",
    "сбросить",
    "изменить",
    "создать",
    "зарегистрировать",
    "передать",
    "начислить",
    "перевести",
    "подключить",
    "отключить",
    "выпустить",
    "перевыпустить",
    "открыть",
    "закрыть",
    "исправить",
    "восстановить",
    "заменить",
    "добавить",
    "удалить",
    "обновить",
    "списать",
    "зачислить",
    "направить",
}
# What was promised: the operator committing to something later
PROMISE_EN = re.compile(
    r"\b(i'?ll|i will|we'?ll|we will|you'?ll (receive|get|see|have)|you will (receive|get|see|have)|"
    r"(it|the \w+) will (be|arrive|appear|reach))\b",
    re.IGNORECASE,
)
PROMISE_RU = re.compile(r"\b(вам (придёт|придет|поступ\w+|вернут|перезвон\w+)|в течение|до конца)\b", re.IGNORECASE)
WHEN = re.compile(
    r"\b(within \d+ (business |working )?(minutes?|hours?|days?|weeks?)|in \d+ (business |working )?"
    r"(minutes?|hours?|days?|weeks?)|by (monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|"
    r"tonight|the end of \w+)|tomorrow|today|next week|"
    r"в течение \d+ (рабоч\w+ )?(минут\w*|час\w*|дн\w+|недел\w+)|через \d+ (минут\w*|час\w*|дн\w+|недел\w+)|"
    r"до (понедельника|вторника|среды|четверга|пятницы|субботы|воскресенья|завтра|конца \w+)|завтра|сегодня|"
    r"на следующей неделе)\b",
    re.IGNORECASE,
)
AMOUNT = re.compile(
    r"([$€£₽]\s?\d[\d\s,.]*\d|\b\d[\d\s,.]*\d?\s?(dollars?|usd|euros?|pounds?|rubles?|roubles?|руб\w*|₽|€|\$)"
    r"|\b\d[\d,.]*\s?(percent|процент\w*|%))",
    re.IGNORECASE,
)
# Still open at the end: the customer saying it is not solved, or asking again
OPEN = re.compile(
    r"\b(still|not yet|doesn'?t work|isn'?t working|didn'?t (work|help)|no one|nobody|"
    r"всё ещё|все еще|до сих пор|так и не|не работает|не помогло|никто|опять)\b",
    re.IGNORECASE,
)

WORDS = {
    "en": {"reason": "Reason", "done": "Done", "promised": "Promised", "open": "Open", "none": "-"},
    "ru": {"reason": "Причина обращения", "done": "Сделано", "promised": "Обещано", "open": "Открыто", "none": "-"},
}


@dataclass
class Line:
    t: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 1), "text": self.text}


def _sentences(fins: list[TranscriptFinal], role: str) -> list[Line]:
    out = []
    for f in fins:
        if f.role != role:
            continue
        for m in SENTENCE.finditer(f.text):
            text = m.group().strip()
            if len(text.split()) >= MIN_WORDS:
                out.append(Line(f.start, text))
    return out


def _verbs(text: str) -> Iterator[Any]:
    """The most likely pymorphy3 parse of each Russian word of `text` that is a verb."""
    from callsense.stages.phrases import morph

    for word in re.findall(r"[а-яё]+", text.lower()):
        best = morph().parse(word)[0]
        if best.tag.POS == "VERB":
            yield best


def _done_ru(text: str) -> bool:
    """An operator's Russian sentence with a perfective past verb of doing («я оформил», «мы вернули»)."""
    return any("past" in v.tag and "perf" in v.tag and v.normal_form in DONE_RU for v in _verbs(text))


def _promised(text: str, ru: bool) -> bool:
    if PROMISE_EN.search(text) or (ru and PROMISE_RU.search(text)):
        return True
    # «я перезвоню», «мы вернём»: a first-person future (perfective present) verb
    return ru and any("futr" in v.tag and "1per" in v.tag for v in _verbs(text))


def call_summary(fins: list[TranscriptFinal], language: str, escalations: list[str] | None = None) -> dict[str, Any]:
    """The summary's parts (each a list of {t, text}) and `text`, the pasteable version. `escalations`:
    the call's warning-or-critical hint titles (said as they were shown)."""
    ru = language.startswith("ru")
    customer, operator = _sentences(fins, "customer"), _sentences(fins, "operator")
    reason = next((s for s in customer if REASON.search(s.text)), customer[0] if customer else None)
    done = [s for s in operator if DONE_EN.search(s.text) or (ru and _done_ru(s.text))]
    promised = [s for s in operator if s not in done and _promised(s.text, ru)]
    tail = [s for s in customer if fins and s.t >= fins[-1].end * 2 / 3]
    still = [s for s in tail if OPEN.search(s.text) and s is not reason]
    parts = {
        "reason": [reason.as_dict()] if reason else [],
        "done": [s.as_dict() for s in done[:5]],
        "promised": [{**s.as_dict(), "when": _all(WHEN, s.text), "amount": _all(AMOUNT, s.text)} for s in promised[:5]],
        "open": [s.as_dict() for s in still[-3:]] + [{"t": None, "text": e} for e in (escalations or [])[:3]],
    }
    return {"language": language[:2], **parts, "text": _render(parts, "ru" if ru else "en")}


def _all(pattern: re.Pattern[str], text: str) -> list[str]:
    return [m.group().strip() for m in pattern.finditer(text)]


def _render(parts: dict[str, list[dict[str, Any]]], lang: str) -> str:
    """Plain text for a ticket: one heading per part, the words as said."""
    say = WORDS[lang]
    lines = []
    for key in ("reason", "done", "promised", "open"):
        items = parts[key]
        if not items:
            lines.append(f"{say[key]}: {say['none']}")
            continue
        lines.append(f"{say[key]}:")
        lines += [f"- {item['text']}" for item in items]
    return "\n".join(lines)
