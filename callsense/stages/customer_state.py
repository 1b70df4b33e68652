"""The customer's state over the conversation: how likely it is, turn by turn, that the customer is
frustrated now - evidence that builds up over their turns and fades when they calm down.

Each customer turn gives evidence in log-odds: its words (the text model's negative and positive
sentiment, and the complaint classifier's probability for the turn's strongest sentence) and, on calls,
its voice (arousal against the customer's own baseline). The state is a leaky sum of that evidence,

    s_t = decay * s_(t-1) + w . x_t,        p_t = sigmoid(s_t + bias),

so one sharp turn, or a steady run of mildly negative ones, raises it, and a calm or thankful turn
(negative evidence) and time let it fall. The text weights, the decay and the bias are a logistic
regression fitted on real support chats with human frustration labels per sentence
(`scripts/calibrate_customer_state.py`, figures in docs/benchmarks.md): `p` is a calibrated probability
that the customer's current turn shows frustration or anger, not a score. There is no labelled angry
speech here, so the voice weight is set by hand and small; so is the weight of an explicit escalation
(the chats hold almost none, yet a customer who asks for a manager is rarely content). docs/benchmarks.md
says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from callsense.config import CustomerStateSettings


@dataclass(frozen=True)
class TurnEvidence:
    """What one customer turn says about frustration, each in 0..1."""

    utterance_id: str
    quote: str
    negative: float  # the text model's negative-sentiment probability (the turn's, or its most negative sentence's)
    positive: float  # its positive-sentiment probability (thanks, relief)
    complaint: float  # the complaint classifier's probability for the turn's strongest sentence
    voice: float = 0.0  # voice arousal above the customer's own baseline (calls only)
    escalation: float = 0.0  # 1 when the turn asked for a manager, threatened or closed the account

    def features(self) -> tuple[float, float, float, float, float]:
        return (self.negative, self.positive, self.complaint, self.voice, self.escalation)


def turn_logit(x: TurnEvidence, s: CustomerStateSettings) -> float:
    """The turn's evidence in log-odds (before the decay of what came earlier)."""
    text = s.w_negative * x.negative + s.w_positive * x.positive + s.w_complaint * x.complaint
    return text + s.w_voice * x.voice + s.w_escalation * x.escalation


@dataclass
class CustomerState:
    """The accumulator for one call's customer; `push` each customer turn, read `probability`."""

    settings: CustomerStateSettings
    level: float = 0.0  # s_t
    turns: list[tuple[TurnEvidence, float]] = field(default_factory=list)  # each turn with its logit
    peak: float = 0.0

    def push(self, x: TurnEvidence) -> float:
        logit = turn_logit(x, self.settings)
        self.level = self.settings.decay * self.level + logit
        self.turns.append((x, logit))
        self.peak = max(self.peak, self.probability)
        return self.probability

    @property
    def probability(self) -> float:
        if not self.turns:
            return 0.0
        return 1.0 / (1.0 + math.exp(-(self.level + self.settings.bias)))

    def negative_turns(self) -> int:
        """How many of the customer's last `cue_window` turns read negative (or escalated)."""
        s = self.settings
        return sum(x.negative >= s.cue_negative or x.escalation > 0 for x, _ in self.turns[-s.cue_window :])

    def why(self, k: int = 3) -> list[TurnEvidence]:
        """The turns that contribute most to the state now (their evidence, decayed by their age),
        newest first among equals: what the operator is shown as the reason."""
        n = len(self.turns)
        weighted = [(logit * self.settings.decay ** (n - 1 - i), i, x) for i, (x, logit) in enumerate(self.turns)]
        top = sorted((w for w in weighted if w[0] > 0), key=lambda w: (-w[0], -w[1]))[:k]
        return [x for _, _, x in sorted(top, key=lambda w: w[1])]
