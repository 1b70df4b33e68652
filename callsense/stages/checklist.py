"""The script checklist (`configs/audit/<language>.yaml`), judged while the call goes on and after it:
one `Checklist`, one set of rules.

An item's live status is what the post-call verdict would be if the call ended now: `done` once the
operator said it (in its window, before what it must precede, among the last turns for an end-of-call
item), `pending` while it can still be said, `due` when its window is closing (the reminder: say it
now), `missed` once the window passed, `failed` when the operator said a prohibited phrase or gave what
the item must precede first. Each change is a `checklist` event with the words that ticked or failed
the items (`evidence`), for the operator's console; the report's compliance is `verdict()` over the
call's finals.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from callsense.events import ChecklistUpdate, TranscriptFinal

Status = Literal["pending", "due", "done", "missed", "failed"]
END_TURNS = 3  # an end-of-call item is judged on the operator's last turns
REMIND_S = 20.0  # a windowed item is due this long before its window closes (at most half the window)


class Item(BaseModel):
    """One checklist item as the YAML names it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    title: str
    pattern: str
    within_first_s: float | None = None
    at_end: bool = False
    prohibited: bool = False
    before_pattern: str | None = None


# the call is closing (the operator offers further help or says goodbye, the customer says goodbye): what is
# still to say is due now; a checklist file may give its own `closing` pattern
CLOSING = (
    r"\b(anything else|is there (something|anything) else|goodbye|bye|have a (good|nice|great) day|that's all|"
    r"(чем|что)[- ]?(то )?(ещё|еще)|до свидания|всего (доброго|хорошего)|это вс[её]|больше ничего)\b"
)


def _read(directory: Path, language: str) -> dict[str, Any]:
    path = directory / f"{language}.yaml"
    if not path.exists():
        path = directory / "en.yaml"  # English where there is none
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_items(directory: Path, language: str) -> list[Item]:
    """The checklist's items for `language`."""
    return [Item(**i) for i in _read(directory, language).get("items", [])]


def _said(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.IGNORECASE) is not None


@dataclass
class Checklist:
    """Operator finals in, `checklist` events out when an item's status changes; `tick` moves windows."""

    items: list[Item]
    closing: str = CLOSING
    _closing: bool = False  # the call is closing: what is still to say is due
    _hits: dict[str, TranscriptFinal] = field(default_factory=dict)  # item id -> the turn that said it first
    _before: dict[str, TranscriptFinal] = field(default_factory=dict)  # item id -> first turn of its before_pattern
    _last: deque[TranscriptFinal] = field(default_factory=lambda: deque(maxlen=END_TURNS))
    _end_hits: dict[str, TranscriptFinal] = field(default_factory=dict)  # end-of-call item id -> among _last
    _now: float = 0.0
    _shown: dict[str, Status] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, language: str) -> Checklist:
        """The checklist of `configs/audit/<language>.yaml` (English where there is none)."""
        data = _read(directory, language)
        return cls([Item(**i) for i in data.get("items", [])], data.get("closing") or CLOSING)

    def push(self, fin: TranscriptFinal) -> list[ChecklistUpdate]:
        if fin.text and _said(self.closing, fin.text) and fin.role in ("operator", "customer"):
            self._closing = True
        if fin.role != "operator" or not fin.text:
            return self._changed()
        self._last.append(fin)
        # an end-of-call item's turn changes only with the last turns: found here, not on every tick
        self._end_hits = {}
        for end in (i for i in self.items if i.at_end):
            said = next((f for f in self._last if _said(end.pattern, f.text)), None)
            if said is not None:
                self._end_hits[end.id] = said
        for item in self.items:
            window = item.within_first_s
            if item.id not in self._hits and (window is None or fin.start <= window) and _said(item.pattern, fin.text):
                self._hits[item.id] = fin
            if item.before_pattern and item.id not in self._before and _said(item.before_pattern, fin.text):
                self._before[item.id] = fin
        self._now = max(self._now, fin.end)
        return self._changed()

    def flush(self) -> list[ChecklistUpdate]:
        return []

    def tick(self, now: float) -> list[ChecklistUpdate]:
        """Stream time moved on: windows close (due, then missed) whether or not anyone speaks."""
        self._now = max(self._now, now)
        return self._changed()

    def status(self, item: Item, ended: bool = False) -> Status:
        hit = self._hit(item)
        if item.prohibited:
            return "failed" if hit is not None else "done" if ended else "pending"
        before = self._before.get(item.id)
        if before is not None and (hit is None or before.start < hit.start):
            return "failed"  # e.g. account details given before the identity was verified
        if hit is not None:
            return "done"
        window = item.within_first_s
        if ended or (window is not None and self._now > window):
            return "missed"
        if self._closing or (window is not None and self._now >= window - min(REMIND_S, window / 2)):
            return "due"
        return "pending"

    def verdict(self, cut: bool = False) -> list[dict[str, Any]]:
        """The post-call compliance: each item passed or not, with the turn that decided it. A call
        whose end may be missing (`cut`) leaves its end-of-call items unjudged (None), never failed."""
        out: list[dict[str, Any]] = []
        for item in self.items:
            if cut and item.at_end:
                out.append({"id": item.id, "title": item.title, "passed": None, "evidence": None})
                continue
            hit = self._hit(item)
            out.append(
                {
                    "id": item.id,
                    "title": item.title,
                    "passed": self.status(item, ended=True) == "done",
                    "evidence": None if hit is None else {"t": hit.start, "text": hit.text[:160]},
                }
            )
        return out

    def _hit(self, item: Item) -> TranscriptFinal | None:
        """The turn that said the item (for an end-of-call item: among the operator's last turns)."""
        return (self._end_hits if item.at_end else self._hits).get(item.id)

    def _changed(self) -> list[ChecklistUpdate]:
        now = {item.id: self.status(item) for item in self.items}
        if now == self._shown:
            return []
        self._shown = now
        evidence = {}
        for item in self.items:
            turn = self._hit(item)
            if now[item.id] == "failed" and item.id in self._before and not item.prohibited:
                turn = self._before[item.id]
            if turn is not None and now[item.id] in ("done", "failed"):
                evidence[item.id] = {"t": turn.start, "text": turn.text[:160]}
        items = [{"id": i.id, "title": i.title, "status": now[i.id], "at_end": i.at_end} for i in self.items]
        return [ChecklistUpdate(items=items, evidence=evidence)]


class ScriptStage:
    """A call's live checklist: the one of the operator's language, known at their first turn (the
    configured language, else English, until then)."""

    def __init__(self, directory: Path, language: str | None) -> None:
        self.directory, self.language = directory, language or "en"
        self.checklist = Checklist.load(directory, self.language)
        self._settled = language is not None

    def push(self, fin: TranscriptFinal) -> list[ChecklistUpdate]:
        if fin.role == "operator" and not self._settled and fin.language:
            self._settled = True
            if fin.language != self.language:
                self.language = fin.language
                self.checklist = Checklist.load(self.directory, fin.language)
        return self.checklist.push(fin)

    def flush(self) -> list[ChecklistUpdate]:
        return []

    def tick(self, now: float) -> list[ChecklistUpdate]:
        return self.checklist.tick(now)
