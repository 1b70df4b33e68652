"""The pasteable call summary: the parties' own words under four headings, in the call's language,
with the times and amounts of promises, redacted like the report."""

from __future__ import annotations

import json

from callsense.config import load_settings
from callsense.events import CallStarted, TranscriptFinal
from callsense.reports.report import build_report
from callsense.reports.summary import call_summary

RU = [
    ("customer", "Здравствуйте, у меня списали комиссию за перевод, хотя перевод не прошёл."),
    ("operator", "Сейчас проверю. Да, вижу списание."),
    ("operator", "Я оформил заявку на возврат комиссии, номер обращения у вас в приложении."),
    ("operator", "Деньги вернутся в течение 5 рабочих дней, сумма 150 рублей."),
    ("operator", "Я перезвоню вам завтра и расскажу, как идёт проверка."),
    ("customer", "Хорошо, но карта всё ещё заблокирована, я не могу ей пользоваться."),
    ("operator", "Всего доброго!"),
]


def _finals(turns: list[tuple[str, str]], language: str) -> list[TranscriptFinal]:
    return [
        TranscriptFinal(speaker=r, role=r, start=i * 10.0, end=i * 10 + 8.0, text=t, language=language, utterance_id=f"u{i}")
        for i, (r, t) in enumerate(turns)
    ]


def test_a_russian_call_summary_has_the_reason_actions_promises_and_what_is_open():
    s = call_summary(_finals(RU, "ru"), "ru")
    assert "списали комиссию" in s["reason"][0]["text"]
    assert [d["text"] for d in s["done"]] == [RU[2][1]]  # a perfective past verb of doing
    promised = {p["text"]: p for p in s["promised"]}
    assert promised[RU[3][1]]["when"] == ["в течение 5 рабочих дней"] and promised[RU[3][1]]["amount"] == ["150 рублей"]
    assert promised[RU[4][1]]["when"] == ["завтра"]  # «перезвоню»: a first-person future
    assert "всё ещё заблокирована" in s["open"][0]["text"]
    assert s["text"].splitlines()[0] == "Причина обращения:" and "Обещано:" in s["text"]
    assert RU[1][1] not in s["text"] and "Всего доброго" not in s["text"]  # checking and goodbye are not actions


def test_an_english_call_summary_from_the_sample_transcript(samples):
    turns = json.loads((samples / "en_escalation_call.json").read_text())["turns"]
    fins = [
        TranscriptFinal(
            speaker=t["role"],
            role=t["role"],
            start=t["start"],
            end=t["end"],
            text=t["text"],
            language="en",
            utterance_id=str(i),
        )
        for i, t in enumerate(turns)
    ]
    s = call_summary(fins, "en", ["the customer asks for a supervisor"])
    said = {t["text"] for t in turns}
    lines = [item["text"] for part in ("reason", "done", "promised") for item in s[part]]
    assert lines and all(any(line in t for t in said) for line in lines)  # extractive: their own words
    assert s["reason"][0]["t"] < 20 and "charged" in s["reason"][0]["text"]
    assert s["open"][-1] == {"t": None, "text": "the customer asks for a supervisor"}
    assert s["text"].startswith("Reason:")


def test_the_reports_summary_is_redacted_like_the_report():
    turns = [("customer", "My card was blocked and I need it back today."), ("operator", "I have unblocked it, Mr Johnson.")]
    events = [CallStarted(sample_rate=16000, channels=["operator", "customer"], source="test"), *_finals(turns, "en")]
    for i, ev in enumerate(events):
        ev.call_id, ev.seq = "c1", i
    report = build_report(events, load_settings())
    assert report["summary"]["done"] and "Johnson" not in json.dumps(report["summary"])
    assert "[NAME]" in report["summary"]["text"]


def test_a_console_asks_for_the_summary_so_far_and_sees_it_as_it_may_see_the_call():
    """The live summary is built from the console's own view: redacted for a supervisor, raw for the
    call's operator, and a revised final replaces its live one."""
    from collections import deque

    from callsense.config import ServerSettings
    from callsense.reports.privacy import redact_event
    from callsense.service.fanout import INPUT, Console, FanOut, Room, SummaryMessage

    turns = [("customer", "My card was blocked and I need it back today."), ("operator", "I have unblocked it, Mr Johnson.")]
    finals = _finals(turns, "en")
    revised = finals[0].model_copy(update={"text": "My card was blocked again and I need it back today.", "revision": 1})
    events = [*finals, revised]
    room = Room("c1", "op-1", deque((ev, redact_event(ev, "en")) for ev in events))
    fanout = FanOut(ServerSettings(), None, on_input=None)  # type: ignore[arg-type]
    assert isinstance(fanout._parse(json.dumps({"type": "summary", "call_id": "c1"}), INPUT), SummaryMessage)
    seen = {
        role: json.loads(fanout._summary(Console(f"{role}:x", role, "op-1" if role == "operator" else None), room))
        for role in ("operator", "supervisor")
    }
    assert seen["operator"]["type"] == "summary" and "Johnson" in seen["operator"]["done"][0]["text"]
    assert "Johnson" not in json.dumps(seen["supervisor"]) and "[NAME]" in seen["supervisor"]["text"]
    assert seen["operator"]["reason"][0]["text"] == "My card was blocked again and I need it back today."
