"""Escalation state: one risk value per call, computed once (here), latched on critical escalations.

A critical hint (manager request, complaint threat, closing the account) latches: the risk stays
high until an operator or supervisor acknowledges the hint (accepts or dismisses it), or the
customer's state has recovered for `recover_turns` turns in a row. Every change is a `risk` event,
so the console, the dashboard and `/metrics` show the same value.
"""

from __future__ import annotations

from callsense.events import Emotion, Hint, HintFeedback, Risk

LATCH = 1.5  # added to the customer's state while a critical escalation is latched


class EscalationState:
    def __init__(self, recover_turns: int = 3) -> None:
        self.recover_turns = recover_turns
        self.latched: Hint | None = None
        self.customer = 0.0  # the customer's state from their latest turn
        self._calm_turns = 0
        self._sent: tuple[float, bool] | None = None

    def push(self, item: Hint | Emotion | HintFeedback) -> list[Risk]:
        if isinstance(item, Hint) and item.severity == "critical":
            self.latched, self._calm_turns = item, 0
        elif isinstance(item, HintFeedback) and self.latched is not None and item.hint_id == self.latched.hint_id:
            self.latched = None
        elif isinstance(item, Emotion) and item.role == "customer":
            self.customer = max(0.0, -item.valence) + max(0.0, item.arousal)
            self._calm_turns = self._calm_turns + 1 if item.valence > -0.1 and item.arousal < 0.3 else 0
            if self.latched is not None and self._calm_turns >= self.recover_turns:
                self.latched = None
        return self._changed()

    def flush(self) -> list[Risk]:
        return []

    @property
    def level(self) -> float:
        return round(self.customer + (LATCH if self.latched is not None else 0.0), 3)

    def _changed(self) -> list[Risk]:
        now = (self.level, self.latched is not None)
        if self._sent is not None and abs(now[0] - self._sent[0]) < 0.05 and now[1] == self._sent[1]:
            return []
        self._sent = now
        latched = self.latched
        return [Risk(level=now[0], latched=now[1], reason=latched.reason if latched else None,
                     hint_id=latched.hint_id if latched else None)]
