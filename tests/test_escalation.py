"""A critical escalation latches until someone acknowledges it or the customer has recovered."""

from callsense.config import CustomerStateSettings
from callsense.events import Emotion, Hint, HintFeedback
from callsense.stages.customer_state import CustomerState, TurnEvidence
from callsense.stages.escalation import LATCH, EscalationState


def _turn(esc: EscalationState, negative: float, positive: float = 0.0) -> list:
    """One customer turn: its evidence into the customer state (the hint stage's part), then its emotion."""
    esc.state.push(TurnEvidence("u", "", negative, positive, 0.0))
    return esc.push(
        Emotion(
            speaker="ch1",
            role="customer",
            start=0,
            end=1,
            valence=positive - negative,
            arousal=0.0,
            label="neutral",
            confidence=0.9,
        )
    )


def _critical(hint_id: str) -> Hint:
    return Hint(hint_id=hint_id, severity="critical", reason="complaint_threat", title="regulator")


def _state(recover_turns: int) -> EscalationState:
    return EscalationState(CustomerState(CustomerStateSettings()), recover_turns=recover_turns)


def test_latched_until_acknowledged():
    esc = _state(recover_turns=3)
    (upset,) = _turn(esc, 0.95)
    assert upset.frustration == round(esc.customer, 3) > 0
    (risk,) = esc.push(_critical("h1"))
    assert risk.latched and risk.hint_id == "h1" and risk.level >= LATCH + upset.frustration
    # the next turn is calmer: the customer's part of the risk falls, the latch holds it up
    (calmer,) = _turn(esc, 0.0, 0.9)
    assert calmer.latched and calmer.level >= LATCH and calmer.frustration < upset.frustration
    assert esc.push(HintFeedback(hint_id="other", action="accepted", by="supervisor:sup")) == []
    # the operator's answer to the critical hint is theirs; the supervisor's alert stays until acknowledged
    assert esc.push(HintFeedback(hint_id="h1", action="accepted", by="operator:op-1")) == []
    (released,) = esc.push(HintFeedback(hint_id="h1", action="accepted", by="supervisor:sup"))
    assert not released.latched and released.level < LATCH


def test_released_after_the_customer_recovers():
    esc = _state(recover_turns=2)
    esc.push(_critical("h1"))
    for _ in range(3):  # still upset: the count of calm turns does not start
        assert _turn(esc, 0.95)[0].latched
    for _ in range(6):
        _turn(esc, 0.0, 0.9)
        if esc.latched is None:
            break
    assert esc.latched is None and esc.level < 1.0, "calm turns release the latch"


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
    assert "High: threatens a complaint" in screen and "complaint_threat" not in screen, "plain words, not ids"
    wall.follow = "calm"
    assert wall.selected.call_id == "calm"


def test_the_customer_state_cue_is_shown_apart_from_escalations():
    """The operator reads a frustrated customer as a mood with its own card, not as one more escalation."""
    from rich.console import Console

    from callsense.events import Risk
    from callsense.service.console import ConsoleView

    view = ConsoleView()
    view.apply(Risk(call_id="c", level=0.62, frustration=0.62))
    view.apply(
        Hint(
            call_id="c",
            hint_id="h1",
            severity="warning",
            reason="customer_frustrated",
            title="customer frustrated (62% likely)",
            phrases=["I understand."],
        )
    )
    view.apply(_critical("h2"))
    console = Console(width=100, record=True)
    console.print(view.render(24))
    screen = console.export_text()
    assert "customer: frustrated (62%)" in screen and "risk Medium: customer frustrated" in screen
    assert "CUSTOMER FRUSTRATED" in screen and "CRITICAL" in screen
    assert screen.count("WARNING") == 0, "the cue is not labelled as a warning like an escalation"


def test_the_terminal_shows_the_card_to_act_on_now_as_the_dashboard_does():
    """A critical card stays until answered, whatever came after; an answered one goes; a hold card ends
    when someone speaks again; other cards go stale after 45 s of the call."""
    from callsense.events import HintFeedback, TranscriptFinal
    from callsense.service.console import ConsoleView

    def hint(hid: str, severity: str, reason: str, t: float) -> Hint:
        return Hint(call_id="c", hint_id=hid, severity=severity, reason=reason, title=hid, phrases=[], t=t)

    view = ConsoleView()
    view.apply(hint("hold", "info", "long_silence", 10.0))
    assert [h.hint_id for h in view.open_hints()] == ["hold"]
    view.apply(TranscriptFinal(call_id="c", speaker="ch0", role="operator", start=12.0, end=13.0, text="I'm back", t=13.0))
    assert view.open_hints() == [], "the hold ended"
    view.apply(_critical("crit"))
    view.apply(hint("warn", "warning", "repeated_request", 20.0))
    assert [h.hint_id for h in view.open_hints()] == ["crit", "warn"]
    view.apply(TranscriptFinal(call_id="c", speaker="ch1", role="customer", start=70.0, end=71.0, text="ok", t=71.0))
    assert [h.hint_id for h in view.open_hints()] == ["crit"], "the warning went stale; the critical card stays"
    view.apply(HintFeedback(call_id="c", hint_id="crit", action="accepted", t=72.0))
    assert view.open_hints() == []
