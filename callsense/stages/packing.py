"""A speaker's turns decoded together in one Whisper window (`Pack`).

Used by recordings (transcribe, analyze, audit: `profiles.recording.pack`), whose turns are decoded
only this way, and by the live `revision.Reviser`, which decodes a live speaker's finals again so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from callsense.config import SAMPLE_RATE
from callsense.events import Word
from callsense.stages.whisper import Hypothesis


@dataclass
class Pack:
    """Utterances of one speaker waiting to be decoded together (a recording's, or a live call's
    revision).

    Whisper pays for a 30 s window however short the audio; a call's turns are mostly a few seconds,
    so a recording's turns are packed, in order and separated by a short silence, into windows of up
    to `seconds` and each window is decoded once (as offline Whisper decodes a whole channel). The
    words go back to the utterance they were heard in. A pack is also decoded once its first
    utterance is `MAX_WAIT_S` old in stream time, so the call's later stages get their finals soon.
    """

    seconds: float
    items: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (count, start sample, audio)

    GAP = int(0.3 * SAMPLE_RATE)
    MAX_WAIT_S = 60.0

    def fits(self, audio: np.ndarray) -> bool:
        used = sum(a.size + self.GAP for _, _, a in self.items)
        return not self.items or used + audio.size <= self.seconds * SAMPLE_RATE

    def add(self, count: int, start_sample: int, audio: np.ndarray) -> None:
        self.items.append((count, start_sample, audio))

    def stale(self, now_sample: int) -> bool:
        return bool(self.items) and now_sample - self.items[0][1] > self.MAX_WAIT_S * SAMPLE_RATE

    def take(self) -> tuple[np.ndarray, list[tuple[int, int, int, float]]]:
        """The window's audio and each utterance's (count, start sample, size, start within the window)."""
        gap = np.zeros(self.GAP, np.float32)
        parts, spans, at = [], [], 0
        for count, start, audio in self.items:
            parts += [audio, gap]
            spans.append((count, start, audio.size, at / SAMPLE_RATE))
            at += audio.size + gap.size
        self.items = []
        return np.concatenate(parts[:-1]), spans

    @staticmethod
    def parts(hyp: Hypothesis, spans: list[tuple[int, int, int, float]]) -> list[tuple[int, int, int, Hypothesis]]:
        """The window's decode split into its utterances: (count, start sample, size, their words
        on the call's clock)."""
        out = []
        for (count, start_sample, size, at), words in zip(spans, Pack.assign(hyp.words, spans), strict=True):
            shift = start_sample / SAMPLE_RATE - at
            mine = [w.model_copy(update={"start": round(w.start + shift, 3), "end": round(w.end + shift, 3)}) for w in words]
            out.append((count, start_sample, size, hyp.only(mine)))
        return out

    @staticmethod
    def assign(words: list[Word], spans: list[tuple[int, int, int, float]]) -> list[list[Word]]:
        """Each word to the utterance whose span (widened by half a gap) holds its midpoint, else the nearest."""
        out: list[list[Word]] = [[] for _ in spans]
        for w in words:
            mid = (w.start + w.end) / 2
            dist = [max(at - mid, mid - at - size / SAMPLE_RATE, 0.0) for _, _, size, at in spans]
            out[int(np.argmin(dist))].append(w)
        return out
