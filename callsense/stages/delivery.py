"""Cues about the operator's own delivery, from the operator's turns and the clock only.

Each is a quiet cue (an `info` hint) with its number, rate-limited by `hints.delivery.cooldown_s`:

- `operator_pace`: a turn spoken much faster than the operator's own pace so far (words per second of
  speech against their median over earlier turns of some length);
- `operator_monologue`: the operator has spoken for a long stretch without the customer saying a word;
- `talk_ratio`: over the call so far the operator does most of the talking.

Talking over the customer (`operator_interrupting`) and silence (`long_silence`, whose card says whether
the operator announced a hold: `hold_announced_at`) are the hint stage's. None of these is an input to
any score: the report's operator-conduct score reads the call's metrics (interruptions, long silences,
red-flag phrases) only.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from callsense.config import DeliverySettings
from callsense.events import TranscriptFinal

# the operator announces a hold: the silence that follows is expected (ru, en)
HOLD_ANNOUNCED = re.compile(
    r"\b(please hold|one moment|bear with me|let me check|stay on the line|give me a (moment|minute|second)|"
    r"while i (check|speak|talk|look|find|get|transfer)|подождите|одну минуту|одну секунду|минуточку|"
    r"оставайтесь на линии|не кладите трубку|сейчас проверю|пока я (проверю|уточню|свяжусь))\b",
    re.IGNORECASE,
)
MAX_GAP_S = 2.0  # operator turns further apart than this are two stretches (the customer may have spoken)
Cue = tuple[str, dict[str, Any], dict[str, Any]]  # reason, title values, evidence


@dataclass
class Delivery:
    settings: DeliverySettings
    _rates: list[float] = field(default_factory=list)  # words per second of the operator's earlier turns
    _talk: dict[str, float] = field(default_factory=dict)  # role -> seconds of speech so far
    _run: tuple[float, float] | None = None  # the operator's current stretch of talk without the customer
    _run_cued: bool = False
    _customer: deque[float] = field(default_factory=lambda: deque(maxlen=20))  # starts of their recent turns
    _ratio_cued: bool = False
    hold_announced_at: float = -1.0  # end of the operator's last turn announcing a hold

    def push(self, fin: TranscriptFinal) -> list[Cue]:
        """One final of either party: the cues it could give now, most specific first (`fired` says
        which one was shown: a monologue is cued once per stretch, the talk ratio once a call)."""
        seconds = max(fin.end - fin.start, 0.0)
        self._talk[fin.role] = self._talk.get(fin.role, 0.0) + seconds
        if fin.role == "customer":
            # channels' finals come in any order: a customer turn inside the stretch ends it too
            self._customer.append(fin.start)
            if self._run is not None and fin.start < self._run[1] + MAX_GAP_S:
                self._run, self._run_cued = None, False
            return []
        if fin.role != "operator":
            return []
        if HOLD_ANNOUNCED.search(fin.text):
            self.hold_announced_at = fin.end
        run = self._run
        if run is None or fin.start - run[1] > MAX_GAP_S or any(run[0] <= c < fin.start for c in self._customer):
            self._run, self._run_cued = (fin.start, fin.end), False
        else:
            self._run = (run[0], max(run[1], fin.end))
        return [c for c in (self._pace(fin, seconds), self._monologue(fin), self._ratio(fin)) if c is not None]

    def fired(self, reason: str) -> None:
        """The cue shown: a monologue once per stretch, the talk ratio once a call (a number to keep in
        mind, not a nag); pace again only after the cooldown."""
        if reason == "operator_monologue":
            self._run_cued = True
        elif reason == "talk_ratio":
            self._ratio_cued = True

    def _pace(self, fin: TranscriptFinal, seconds: float) -> Cue | None:
        s = self.settings
        words = len(fin.text.split())
        if seconds < s.pace_min_turn_s or words < 6:
            return None  # a short turn's rate says little
        rate = words / seconds
        usual = statistics.median(self._rates) if len(self._rates) >= s.pace_baseline_turns else None
        self._rates.append(rate)
        del self._rates[: -s.pace_baseline_turns * 4]  # the operator's recent turns: bounded, and their pace today
        if usual is None or rate < usual * s.pace_factor:
            return None
        values = {"rate": round(rate, 1), "usual": round(usual, 1)}
        return "operator_pace", values, {**values, "utterance_id": fin.utterance_id}

    def _monologue(self, fin: TranscriptFinal) -> Cue | None:
        assert self._run is not None
        talked = self._run[1] - self._run[0]
        if self._run_cued or talked < self.settings.monologue_s:
            return None
        values = {"seconds": round(talked)}
        return "operator_monologue", values, {**values, "since": round(self._run[0], 2)}

    def _ratio(self, fin: TranscriptFinal) -> Cue | None:
        s = self.settings
        total = sum(self._talk.values())
        share = self._talk.get("operator", 0.0) / total if total else 0.0
        if self._ratio_cued or fin.end < s.talk_ratio_after_s or share < s.talk_ratio:
            return None
        values = {"percent": round(100 * share)}
        return "talk_ratio", values, {**values, "operator_s": round(self._talk.get("operator", 0.0), 1)}
