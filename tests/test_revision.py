"""Revisions (live turns decoded again in packs) are background work: they never take the slot kept
for finals' latency, and consoles correct the line they revise."""

import threading

from callsense.events import TranscriptFinal
from callsense.service.console import ConsoleView
from callsense.stages.whisper import DecodeGate


def test_background_work_takes_a_free_slot_but_never_one_a_final_waits_for():
    gate = DecodeGate(2)
    held, release = threading.Event(), threading.Event()

    def revise() -> None:
        with gate.optional(background=True) as admitted:
            assert admitted
            held.set()
            release.wait(5)

    th = threading.Thread(target=revise)
    th.start()
    assert held.wait(5)
    with gate.optional() as admitted:
        assert admitted, "a partial or speculative final still runs beside a revision"
    with gate.final():  # a final still gets the other slot
        assert gate.busy == 2
        with gate.optional(background=True) as second:
            assert not second, "no slot is free"
    release.set()
    th.join(5)
    assert gate.busy == 0 and gate.background == 0


def _final(uid: str, text: str, start: float, revision: int = 0) -> TranscriptFinal:
    return TranscriptFinal(speaker="ch0", role="operator", start=start, end=start + 1, text=text,
                           utterance_id=uid, revision=revision)


def test_the_console_corrects_a_revised_line_and_drops_a_withdrawn_one():
    view = ConsoleView()
    for ev in (_final("ch0-1", "Нажми тебя", 1.0), _final("ch0-2", "That was awesome.", 3.0),
               _final("ch0-3", "Спасибо", 5.0)):
        view.apply(ev)
    view.apply(_final("ch0-1", "Нажмите", 1.0, revision=1))
    view.apply(_final("ch0-2", "", 3.0, revision=1))
    assert [line[0].text for line in view.lines] == ["Нажмите", "Спасибо"]
