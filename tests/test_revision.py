"""Revisions (live turns decoded again in packs) are background work that live calls' decodes come
before, and consoles correct the line they revise."""

import os
import threading

from callsense.events import TranscriptFinal
from callsense.service.console import ConsoleView


def test_revisions_run_at_the_lowest_cpu_priority_outside_the_decode_gate():
    from callsense.stages import revision

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    # the one revision thread may still be busy with earlier calls' revisions, at the lowest priority on a
    # busy machine: this waits its turn (a generous deadline, not a measure of speed)
    assert revision._executor().submit(priority).result(timeout=600) == revision.NICE, "live calls get the cores first"


def _final(uid: str, text: str, start: float, revision: int = 0) -> TranscriptFinal:
    return TranscriptFinal(
        speaker="ch0", role="operator", start=start, end=start + 1, text=text, utterance_id=uid, revision=revision
    )


def test_the_console_corrects_a_revised_line_and_drops_a_withdrawn_one():
    view = ConsoleView()
    for ev in (
        _final("ch0-1", "Нажми тебя", 1.0),
        _final("ch0-2", "That was awesome.", 3.0),
        _final("ch0-3", "Спасибо", 5.0),
    ):
        view.apply(ev)
    view.apply(_final("ch0-1", "Нажмите", 1.0, revision=1))
    view.apply(_final("ch0-2", "", 3.0, revision=1))
    assert [line[0].text for line in view.lines] == ["Нажмите", "Спасибо"]


def test_a_report_from_stored_events_counts_a_revised_turn_once():
    """The store keeps the live final and its revision (recovery rebuilds reports from it)."""
    from callsense.reports.report import transcript_text

    stored = [
        _final("ch0-1", "Нажми тебя", 1.0),
        _final("ch0-2", "That was awesome.", 3.0),
        _final("ch0-1", "Нажмите", 1.0, revision=1),
        _final("ch0-2", "", 3.0, revision=1),
    ]
    assert [line.split(": ", 1)[1] for line in transcript_text(stored).splitlines()] == ["Нажмите"]


def test_packs_left_unrevised_under_load_are_counted(models, settings):
    """While the background thread is busy, a speaker's next pack is skipped and the call's last
    packs miss the record's deadline: their live finals stand, and metrics say how many."""
    import time

    import numpy as np

    from callsense.stages import revision
    from callsense.stages.revision import RevisionCounts
    from callsense.stages.whisper import WhisperDecoder

    busy = threading.Event()
    revision._executor().submit(busy.wait, 30)  # the one background thread is taken
    counts = RevisionCounts()
    reviser = revision.Reviser(WhisperDecoder(models.whisper, settings.asr), 28.0, lambda: models.whisper, counts)
    turn = np.zeros(10 * 16000, np.float32)
    try:
        for count in range(6):  # three packs of two 10 s turns: the second finds the first pending
            reviser.add(count, count * 11 * 16000, turn, "live words", "", "ru")
        reviser.end()
        assert reviser.rest(time.monotonic()) == []  # the record cannot wait: live finals stand
    finally:
        busy.set()
    assert counts.as_dict() == {"revised": 0, "skipped": 1, "dropped": 2}
