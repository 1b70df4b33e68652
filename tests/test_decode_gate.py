"""The process-wide admission to Whisper: finals first, optional decodes only on spare capacity."""

import threading
import time

from callsense.stages.transcription import DecodeGate


def _hold_final(gate: DecodeGate, entered: threading.Event, release: threading.Event) -> threading.Thread:
    def run() -> None:
        with gate.final():
            entered.set()
            release.wait(5)

    th = threading.Thread(target=run)
    th.start()
    return th


def test_optional_decodes_run_only_when_a_slot_stays_free_for_finals():
    gate = DecodeGate(2)
    with gate.optional() as admitted:
        assert admitted  # idle: a partial may run
    entered, release = threading.Event(), threading.Event()
    th = _hold_final(gate, entered, release)
    assert entered.wait(5)
    with gate.optional() as admitted:
        assert not admitted, "the second slot is kept for finals"
    assert gate.skipped == 1
    release.set()
    th.join(5)
    with gate.optional() as admitted:
        assert admitted
    assert gate.busy == 0


def test_a_waiting_final_goes_before_any_optional_decode():
    gate = DecodeGate(1)
    entered, release = threading.Event(), threading.Event()
    first = _hold_final(gate, entered, release)
    assert entered.wait(5)
    second_in, second_release = threading.Event(), threading.Event()
    second = _hold_final(gate, second_in, second_release)
    while gate.waiting == 0:  # the second final is queued behind the first
        time.sleep(0.01)
    release.set()
    first.join(5)
    assert second_in.wait(5), "the queued final got the slot"
    with gate.optional() as admitted:
        assert not admitted
    second_release.set()
    second.join(5)
    assert gate.busy == 0
