"""The script checklist ticked live as the operator speaks, and the same rules after the call."""

from __future__ import annotations

from callsense.config import CONFIG_DIR
from callsense.events import TranscriptFinal
from callsense.stages.checklist import Checklist, ScriptStage, load_items

EN = load_items(CONFIG_DIR / "audit", "en")


def _turn(role: str, text: str, start: float, language: str = "en") -> TranscriptFinal:
    return TranscriptFinal(
        speaker=role, role=role, start=start, end=start + 3, text=text, language=language, utterance_id=f"{role}-{start}"
    )


def _status(check: Checklist) -> dict[str, str]:
    return {item.id: check.status(item) for item in check.items}


def test_items_are_ticked_with_the_words_that_ticked_them():
    check = Checklist(EN)
    (update,) = check.push(_turn("operator", "Good morning, Harbour Bank, my name is Anna.", 1.0))
    greeting = next(i for i in update.items if i.id == "greeting")
    assert greeting.status == "done" and update.evidence["greeting"]["text"].startswith("Good morning")
    assert _status(check)["disclosure_recording"] == "pending"
    assert check.push(_turn("customer", "My name is Bob, I have a question.", 5.0)) == [], "only the operator's words count"


def test_a_windowed_item_is_due_before_its_window_closes_then_missed():
    check = Checklist(EN)
    assert _status(check)["disclosure_recording"] == "pending"
    (due,) = check.tick(45.0)  # 60 s window: the reminder 20 s before it closes
    assert {i.id: i.status for i in due.items}["disclosure_recording"] == "due"
    assert check.tick(50.0) == [], "one event per change, not one per tick"
    (missed,) = check.tick(61.0)
    assert {i.id: i.status for i in missed.items}["disclosure_recording"] == "missed"
    # a turn that began inside the window but was decoded after it still counts
    check.push(_turn("operator", "This call may be recorded.", 58.0))
    assert _status(check)["disclosure_recording"] == "done"


def test_a_prohibited_phrase_and_details_before_the_identity_check_fail_at_once():
    check = Checklist(EN)
    (update,) = check.push(_turn("operator", "Your balance is twelve pounds.", 3.0))
    assert {i.id: i.status for i in update.items}["identity_verification"] == "failed"
    assert update.evidence["identity_verification"]["text"] == "Your balance is twelve pounds."
    (update,) = check.push(_turn("operator", "Please calm down.", 9.0))
    assert {i.id: i.status for i in update.items}["no_prohibited"] == "failed"


def test_an_end_of_call_item_counts_only_among_the_last_turns():
    check = Checklist(EN)
    check.push(_turn("operator", "Thank you for calling Harbour Bank.", 1.0))
    assert _status(check)["farewell"] == "done"  # if the call ended now, it would pass
    for i in range(3):
        check.push(_turn("operator", f"Let me look at that, step {i}.", 10.0 + 5 * i))
    assert _status(check)["farewell"] == "pending", "a greeting's thanks is no farewell once the call goes on"
    check.push(_turn("operator", "Have a nice day, goodbye.", 40.0))
    assert _status(check)["farewell"] == "done"


def test_the_verdict_after_the_call_is_the_live_status_at_its_end():
    turns = [
        _turn("operator", "Hello, Harbour Bank, my name is Anna. This call may be recorded.", 1.0),
        _turn("customer", "I need my balance.", 6.0),
        _turn("operator", "Can you confirm your date of birth?", 10.0),
        _turn("operator", "Your balance is twelve pounds.", 20.0),
        _turn("operator", "Is there anything else?", 30.0),
    ]
    check = Checklist(EN)
    for t in turns:
        check.push(t)
    live = _status(check)
    verdict = {c["id"]: c["passed"] for c in check.verdict()}
    for item in EN:
        if live[item.id] in ("done", "failed"):
            assert verdict[item.id] == (live[item.id] == "done"), item.id
    assert verdict == {
        "greeting": True,
        "identity_verification": True,
        "disclosure_recording": True,
        "no_prohibited": True,
        "further_help": True,
        "farewell": False,
    }
    assert {c["id"]: c["passed"] for c in check.verdict(cut=True)}["farewell"] is None, "a cut call's end is not judged"


def test_the_operators_language_picks_the_checklist():
    stage = ScriptStage(CONFIG_DIR / "audit", None)
    (update,) = stage.push(_turn("operator", "Здравствуйте, банк Восток, меня зовут Анна.", 1.0, language="ru"))
    assert stage.language == "ru"
    assert {i.id: i.status for i in update.items}["greeting"] == "done"
    assert any("Приветствие" in i.title for i in update.items)


def test_the_terminal_shows_the_script_and_what_to_say_now():
    from rich.console import Console

    from callsense.service.console import ConsoleView

    check = Checklist(EN)
    view = ConsoleView()
    for ev in [*check.push(_turn("operator", "Good morning, Harbour Bank, my name is Anna.", 1.0)), *check.tick(45.0)]:
        view.apply(ev.model_copy(update={"call_id": "c"}))
    console = Console(width=100, record=True)
    console.print(view.render(24))
    screen = console.export_text()
    assert "\u2713 Greeting" in screen, "ticked"
    assert "Call-recording disclosure (say it now)" in screen, "the due item whole, as a reminder"


def test_the_live_red_flag_and_the_checklist_agree():
    """An operator phrase the live red-flag hint fires on fails the checklist's prohibited-phrases item
    (the hint fired on "nothing more I can do" while the report said the item passed)."""
    import re

    from callsense.stages.hints import OPERATOR_RED_FLAGS

    said = {
        "en": [
            "There is nothing more I can do about it.",
            "Please calm down.",
            "That's not my problem.",
            "I can't help you.",
        ],
        "ru": ["Больше ничего не могу сделать.", "Успокойтесь, пожалуйста.", "Это не ко мне.", "Вы сами виноваты."],
    }
    for language, phrases in said.items():
        for phrase in phrases:
            assert any(re.search(flag, phrase, re.IGNORECASE) for flag in OPERATOR_RED_FLAGS), phrase
            check = Checklist(load_items(CONFIG_DIR / "audit", language))
            check.push(_turn("operator", phrase, 5.0, language))
            assert {c["id"]: c["passed"] for c in check.verdict()}["no_prohibited"] is False, phrase


def test_what_is_still_to_say_is_due_once_the_call_is_closing():
    check = Checklist.load(CONFIG_DIR / "audit", "en")
    check.push(_turn("operator", "Good morning, Harbour Bank, my name is Anna.", 1.0))
    assert _status(check)["identity_verification"] == "pending"
    check.push(_turn("customer", "Okay, that's all, goodbye.", 20.0))
    status = _status(check)
    assert status["identity_verification"] == "due" and status["farewell"] == "due", "say it before the call ends"
    assert status["no_prohibited"] == "pending" and status["greeting"] == "done"


def test_the_words_a_checklist_or_a_note_quotes_are_redacted_like_a_transcript():
    """Both carry the operator's or the supervisor's words to disk and to supervisors' views."""
    from callsense.events import SupervisorNote
    from callsense.reports.privacy import redact_events

    check = Checklist(EN)
    (update,) = check.push(_turn("operator", "Hello, Harbour Bank, my name is Anna, call me on +44 7700 900123.", 1.0))
    note = SupervisorNote(text="call him back on +44 7700 900123", by="supervisor:sup")
    red_update, red_note = redact_events([update, note], "en")
    assert "900123" in update.evidence["greeting"]["text"]
    assert "900123" not in red_update.evidence["greeting"]["text"] and "[PHONE]" in red_update.evidence["greeting"]["text"]
    assert "900123" not in red_note.text
