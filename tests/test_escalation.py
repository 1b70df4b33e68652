"""A critical escalation latches until someone acknowledges it or the customer has recovered."""

from callsense.events import Emotion, Hint, HintFeedback
from callsense.stages.escalation import LATCH, EscalationState


def _customer(valence: float, arousal: float = 0.0) -> Emotion:
    return Emotion(speaker="ch1", role="customer", start=0, end=1, valence=valence, arousal=arousal,
                   label="neutral", confidence=0.9)


def _critical(hint_id: str) -> Hint:
    return Hint(hint_id=hint_id, severity="critical", reason="complaint_threat", title="regulator")


def test_latched_until_acknowledged():
    esc = EscalationState(recover_turns=3)
    esc.push(_customer(-0.8, 0.6))
    (risk,) = esc.push(_critical("h1"))
    assert risk.latched and risk.hint_id == "h1" and risk.level >= LATCH + 1.0
    # the next turn is calmer: the customer's part of the risk falls, the latch holds it up
    (calmer,) = esc.push(_customer(0.1))
    assert calmer.latched and calmer.level >= LATCH
    assert esc.push(HintFeedback(hint_id="other", action="accepted")) == []
    (released,) = esc.push(HintFeedback(hint_id="h1", action="dismissed"))
    assert not released.latched and released.level < LATCH


def test_released_after_the_customer_recovers():
    esc = EscalationState(recover_turns=2)
    esc.push(_critical("h1"))
    assert esc.push(_customer(-0.5, 0.5))[0].latched  # still upset: the count starts again
    esc.push(_customer(0.2))
    assert esc.latched is not None
    esc.push(_customer(0.3))
    assert esc.latched is None and esc.level < 1.0


def test_terminal_console_lists_calls_and_shows_the_most_urgent():
    from rich.console import Console

    from callsense.events import Risk, TranscriptFinal
    from callsense.service.console import WallView

    wall = WallView()
    for call, risk, latched in (("calm", 0.2, False), ("angry", 2.9, True), ("mid", 0.9, False)):
        fin = TranscriptFinal(call_id=call, speaker="ch1", role="customer", start=0, end=1, text=f"hello from {call}")
        wall.apply(fin)
        wall.apply(Risk(call_id=call, level=risk, latched=latched, reason="complaint_threat" if latched else None))
    assert wall.selected.call_id == "angry", "a latched escalation comes first"
    console = Console(width=80, record=True)
    console.print(wall.render(24))
    screen = console.export_text()
    assert all(c in screen for c in ("calm", "angry", "mid")) and "hello from angry" in screen
    assert "hello from calm" not in screen, "one call's transcript, not all calls mixed"
    wall.follow = "calm"
    assert wall.selected.call_id == "calm"
