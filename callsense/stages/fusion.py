"""Fusion: one emotion reading per turn and speaker from the words and the voice, with evidence,
and smoothed trajectories over the call for every speaker (the operator too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from callsense.config import EmotionSettings
from callsense.events import Emotion, Role
from callsense.stages.prosody import SpeechScores
from callsense.stages.text_emotion import TextScores

# How strongly each emotion stirs a speaker up, for arousal from words alone.
TEXT_AROUSAL = {"anger": 0.8, "fear": 0.6, "surprise": 0.5, "joy": 0.3, "sadness": -0.4, "neutral": -0.2}
TEXT_WEIGHT = 0.6  # words carry valence better than voice; the voice carries arousal


@dataclass
class Trajectory:
    valence: float | None = None
    arousal: float | None = None
    history: list[float] = field(default_factory=list)

    def update(self, valence: float, arousal: float, alpha: float) -> float:
        """Exponential smoothing; returns the valence trend (smoothed now minus three turns ago)."""
        self.valence = valence if self.valence is None else alpha * valence + (1 - alpha) * self.valence
        self.arousal = arousal if self.arousal is None else alpha * arousal + (1 - alpha) * self.arousal
        self.history.append(self.valence)
        past = self.history[-4] if len(self.history) >= 4 else self.history[0]
        return round(self.valence - past, 3)


class Fuser:
    """Reads each turn in its conversation: besides the words and the voice it remembers the waits
    before turns and each speaker's recent valence, so positive words after negative events
    ("Great. Just great… thanks a lot" after two holds) are read as irony candidates, never as joy."""

    def __init__(self, settings: EmotionSettings) -> None:
        self.settings = settings
        self.trajectories: dict[str, Trajectory] = {}
        self._last_end = 0.0
        self._holds: list[float] = []  # end times of long waits
        self._recent: dict[str, list[float]] = {}  # speaker -> valences of their last turns

    def _negative_events(self, speaker: str, start: float) -> list[str]:
        if self._last_end and start - self._last_end >= self.settings.irony_hold_s:
            self._holds.append(start)
        events = (
            [f"a {self.settings.irony_hold_s:.0f}+ s wait before this turn"]
            if self._holds and self._holds[-1] == start
            else []
        )
        if len(self._holds) >= 2:
            events.append(f"{len(self._holds)} long waits in this call")
        if any(v <= -0.3 for v in self._recent.get(speaker, [])[-3:]):
            events.append("the speaker was negative in a recent turn")
        return events

    def fuse(
        self,
        speaker: str,
        role: Role,
        start: float,
        end: float,
        utterance_id: str,
        text: str,
        words: TextScores | None,
        voice: SpeechScores | None,
    ) -> Emotion:
        negative = self._negative_events(speaker, start)
        self._last_end = max(self._last_end, end)
        probs = self._label_probs(words, voice)
        label = max(probs, key=probs.get)  # type: ignore[arg-type]
        confidence = probs[label]
        valence = words.valence if words else 0.0
        irony: dict[str, object] | None = None
        if words and valence > 0.2 and negative:
            # positive words after negative events: an irony candidate. Never joy; negative when the
            # conversation had more than one negative event, otherwise unknown (0).
            irony = {"words_valence": round(valence, 2), "after": negative}
            valence = -0.5 * valence if len(negative) > 1 else 0.0
            label, confidence = "uncertain", max(probs.get("neutral", 0.0), 0.5)
        self._recent.setdefault(speaker, []).append(valence)
        if voice:
            valence -= 0.2 * voice.emotion.get("anger", 0.0) * max(voice.arousal, 0.0)
            arousal = voice.arousal if not words else 0.75 * voice.arousal + 0.25 * self._text_arousal(words)
        else:
            arousal = self._text_arousal(words) if words else 0.0
        if confidence < self.settings.uncertain_below and not irony:
            label = "uncertain"
        traj = self.trajectories.setdefault(speaker, Trajectory())
        trend = traj.update(valence, arousal, self.settings.smoothing)
        evidence: dict[str, object] = {"quote": text[:200]}
        if irony:
            evidence["irony_candidate"] = irony
        if words:
            evidence["text"] = {
                "label": words.label,
                "p": round(words.emotion[words.label], 2),
                "sentiment": {k: round(v, 2) for k, v in words.sentiment.items()},
                "negative_max": round(words.negative_max, 2),
            }
        if voice:
            evidence["voice"] = {
                "arousal": round(voice.arousal, 2),
                "deviations": voice.evidence(),
                "z": voice.z,
                "voiced_s": voice.voiced_s,
            }
        else:
            evidence["voice"] = "no usable voice in this turn"
        sentiment = max(words.sentiment, key=words.sentiment.get) if words else "neutral"  # type: ignore[arg-type]
        return Emotion(
            speaker=speaker,
            role=role,
            utterance_id=utterance_id,
            start=start,
            end=end,
            valence=round(max(-1.0, min(1.0, valence)), 3),
            arousal=round(max(-1.0, min(1.0, arousal)), 3),
            label=label,
            confidence=round(confidence, 3),
            sentiment=sentiment,
            evidence=evidence,
            trend=trend,
        )

    @staticmethod
    def _text_arousal(words: TextScores) -> float:
        return sum(p * TEXT_AROUSAL.get(k, 0.0) for k, p in words.emotion.items())

    @staticmethod
    def _label_probs(words: TextScores | None, voice: SpeechScores | None) -> dict[str, float]:
        labels = set(words.emotion if words else {}) | set(voice.emotion if voice else {})
        if words and voice:
            return {
                k: TEXT_WEIGHT * words.emotion.get(k, 0.0) + (1 - TEXT_WEIGHT) * voice.emotion.get(k, 0.0) for k in labels
            }
        source = words.emotion if words else voice.emotion if voice else {"neutral": 0.0}
        return dict(source)
