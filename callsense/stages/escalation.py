"""Escalation state: one risk value per call, computed once (here), latched on critical escalations.

The customer's part is the customer state's probability that the customer is frustrated now
(stages/customer_state.py, calibrated on labelled chats; the hint stage keeps it up to date). A critical
hint (manager request, complaint threat, closing the account) latches: the risk stays high until a
supervisor acknowledges the hint (the operator's own answer to it is recorded, and leaves the
supervisor's alert standing), or the customer's state has
stayed low for `recover_turns` turns in a row. Every change, and every customer turn, is a `risk` event,
so the console, the dashboard, `/metrics` and the report show the same values.
"""

from __future__ import annotations

from callsense.events import Emotion, Hint, HintFeedback, Risk
from callsense.stages.customer_state import CustomerState

LATCH = 1.5  # added to the customer's state while a critical escalation is latched


class EscalationState:
    def __init__(self, customer: CustomerState, recover_turns: int = 3) -> None:
        self.state = customer
        self.recover_turns = recover_turns
        self.latched: Hint | None = None
        self._calm_turns = 0
        self._sent: tuple[float, bool] | None = None

    @property
    def customer(self) -> float:
        return self.state.probability

    def push(self, item: Hint | Emotion | HintFeedback) -> list[Risk]:
        turn = False
        if isinstance(item, Hint) and item.severity == "critical":
            self.latched, self._calm_turns = item, 0
        elif isinstance(item, HintFeedback) and self.latched is not None and item.hint_id == self.latched.hint_id:
            if item.by.startswith("supervisor"):  # the operator's answer is recorded; only a supervisor releases
                self.latched = None
        elif isinstance(item, Emotion) and item.role == "customer":
            turn = True
            calm = self.customer < self.state.settings.rearm_probability
            self._calm_turns = self._calm_turns + 1 if calm else 0
            if self.latched is not None and self._calm_turns >= self.recover_turns:
                self.latched = None
        return self._changed(turn)

    def flush(self) -> list[Risk]:
        return []

    @property
    def level(self) -> float:
        return round(self.customer + (LATCH if self.latched is not None else 0.0), 3)

    def _changed(self, turn: bool) -> list[Risk]:
        """A risk event on each customer turn (the state's course is the report's evidence) and whenever
        the level moves or the latch changes."""
        now = (self.level, self.latched is not None)
        if not turn and self._sent is not None and abs(now[0] - self._sent[0]) < 0.05 and now[1] == self._sent[1]:
            return []
        self._sent = now
        latched = self.latched
        return [
            Risk(
                level=now[0],
                latched=now[1],
                frustration=round(self.customer, 3),
                reason=latched.reason if latched else None,
                hint_id=latched.hint_id if latched else None,
            )
        ]
