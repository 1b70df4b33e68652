"""Kept call audio with personal data silenced (`report.keep_audio` with `report.redact_pii`).

While a call runs, its audio is spooled to `audio/<hash>.partial.flac` in the store. When it ends, the
time spans of every word the transcript redaction removed (by the words' own timings, padded) are set
to silence on every channel - the other channel too: an echo or crosstalk carries the same value - and
the result becomes `audio/<hash>.flac`; the spool is deleted. A final without word timings, or whose
words cannot be placed in its text, is silenced whole. A call a killed process left has only its
redacted events on disk: each final that had something redacted is silenced whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import soundfile as sf

from callsense.events import Event, TranscriptFinal

PAD_S = 0.25  # word timings are approximate: a little either side
REDACTED = re.compile(r"\[[A-Z_]+\]")  # what a redacted text holds where a value was

Span = tuple[float, float]


def spool_path(final: Path) -> Path:
    return final.with_suffix(".partial.flac")


# In kept audio any run of five digits or more is silenced, whether or not a rule named it: a number the
# speaker read over two turns, or one the transcript got slightly wrong («415550132»), is still heard
# whole in the audio, and a long number is never what a quality analyst needs to hear.
LONG_NUMBER = re.compile(r"\d(?:[\s.,/-]{0,2}\d){4,}")


def spans_to_silence(final: TranscriptFinal, found: list[tuple[int, int, str]]) -> list[Span]:
    """The times of the final's words that hold personal data (`found`: its spans in the final's text, as
    redaction found them, and every long number; all of it when the words cannot be placed)."""
    found = [*found, *((m.start(), m.end(), "NUMBER") for m in LONG_NUMBER.finditer(final.text))]
    if not found:
        return []
    whole = [(final.start, final.end)]
    if not final.words:
        return whole
    words, spans, pos = final.words, [], 0
    for i, w in enumerate(words):
        token = w.word.strip()
        at = final.text.find(token, pos) if token else pos
        if at < 0:
            return whole
        end = at + len(token)
        pos = end
        if any(a < end and at < b for a, b, _ in found):
            # word ends are the least reliable timings (a long number's often ends early): the value's
            # span reaches from the word before it to the word after it
            start = min(w.start, words[i - 1].end) if i else final.start
            stop = max(w.end, words[i + 1].start) if i + 1 < len(words) else max(w.end, final.end)
            spans.append((start, stop))
    return spans or whole


def spans_from_stored(events: Iterable[Event]) -> list[Span]:
    """After a crash only redacted events remain: finals that had a value redacted, whole."""
    return [(e.start, e.end) for e in events if isinstance(e, TranscriptFinal) and REDACTED.search(e.text)]


def seal(spool: Path, out: Path, spans: list[Span]) -> dict[str, Any]:
    """Write `out` from the spool with `spans` silenced on every channel, delete the spool; what was done,
    for the report."""
    audio, got = sf.read(spool, dtype="float32", always_2d=True)
    silenced = 0.0
    for a, b in sorted(spans):
        lo, hi = max(0, int((a - PAD_S) * got)), min(len(audio), int((b + PAD_S) * got))
        if hi > lo:
            audio[lo:hi] = 0.0
            silenced += (hi - lo) / got
    sf.write(out, audio, got, format="FLAC")
    spool.unlink(missing_ok=True)
    return {"kept": True, "silenced_spans": len(spans), "silenced_s": round(silenced, 2)}


def seal_interrupted(spool: Path, out: Path, events: list[Event]) -> dict[str, Any] | None:
    """A spool a killed process left: sealed from the stored (redacted) events, or deleted if unreadable."""
    if not spool.exists():
        return None
    try:
        return seal(spool, out, spans_from_stored(events))
    except (RuntimeError, OSError):  # a spool cut mid-write: nothing unredacted may stay
        spool.unlink(missing_ok=True)
        return {"kept": False, "silenced_spans": 0, "silenced_s": 0.0}
