"""A supervisor's note to an operator: only supervisors send one, it is short, and the terminal shows it."""

from __future__ import annotations

import json
from collections import deque

import pytest

from callsense.config import ServerSettings
from callsense.events import NOTE_CHARS, SupervisorNote
from callsense.service.fanout import INPUT, Console, FanOut, NoteMessage, Room, _check_role


def _note(text: str, joining: bool = False) -> str:
    return json.dumps({"type": "note", "call_id": "c1", "text": text, "joining": joining})


def test_only_a_supervisor_sends_a_note_and_it_is_short():
    fanout = FanOut(ServerSettings(), None, on_input=None)  # type: ignore[arg-type]
    msg = fanout._parse(_note("  offer the fee refund "), INPUT)
    assert isinstance(msg, NoteMessage) and msg.text == "offer the fee refund"
    room = Room("c1", "op-1", deque())
    _check_role(Console("supervisor:sup", "supervisor", None), room, msg)
    with pytest.raises(ValueError, match="only supervisors"):
        _check_role(Console("operator:op1", "operator", "op-1"), room, msg)
    for bad in ("", "   ", "x" * (NOTE_CHARS + 1)):
        with pytest.raises(ValueError, match="text"):
            fanout._parse(_note(bad), INPUT)


def test_the_terminal_shows_the_supervisors_note():
    from rich.console import Console as Screen

    from callsense.service.console import ConsoleView

    view = ConsoleView()
    view.apply(SupervisorNote(call_id="c", text="offer the fee refund", by="supervisor:sup"))
    screen = Screen(width=100, record=True)
    screen.print(view.render(24))
    assert "supervisor \u201coffer the fee refund\u201d" in screen.export_text()
    view.apply(SupervisorNote(call_id="c", text="I'm joining", by="supervisor:sup", joining=True))
    screen = Screen(width=100, record=True)
    screen.print(view.render(24))
    assert "supervisor is joining the call" in screen.export_text()
