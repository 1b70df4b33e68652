"""Overtalk: two speakers' final turns that overlap in time (who interrupted whom, for how long)."""

from __future__ import annotations

from collections import deque

from callsense.events import Overlap, TranscriptFinal

MIN_OVERLAP_S = 0.3  # shorter overlaps are back-channel ("mm", "yes") or word-timing jitter


class OverlapDetector:
    """final transcript -> [Overlap] with each of the recent turns of other speakers it overlaps."""

    def __init__(self, recent: int = 8) -> None:
        self.recent: deque[TranscriptFinal] = deque(maxlen=recent)

    def push(self, fin: TranscriptFinal) -> list[Overlap]:
        out = []
        for other in reversed(self.recent):
            if other.speaker == fin.speaker:
                continue
            a, b = max(fin.start, other.start), min(fin.end, other.end)
            if b - a >= MIN_OVERLAP_S:
                later, earlier = (fin, other) if fin.start > other.start else (other, fin)
                out.append(
                    Overlap(start=round(a, 2), end=round(b, 2), interrupter=later.speaker, interrupted=earlier.speaker)
                )
        self.recent.append(fin)
        return out

    def flush(self) -> list[Overlap]:
        return []
