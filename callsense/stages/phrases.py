"""Suggested phrases that stay grammatical and grounded: no customer text is ever spliced in.

A playbook phrase may hold two slots, filled only from closed vocabularies:
- `{address}`: how the operator addresses the customer, by the playbook's `address` setting
  (`none`; `first_name`; `first_name_patronymic`, Russian: "Иван Петрович" - never a surname);
  filled only when the customer said their name in the needed parts (pymorphy3 tells a first name
  from a patronymic);
- `{topic}` or `{topic:CASE}`: what the call is about, one of the playbook's `topics` (card,
  transfer, loan ...), recognised from the customer's words by lemma; in Russian it is inflected by
  pymorphy3 to the case the phrase needs (`{topic:ablt}` -> "с картой", `{topic:loct}` -> "о карте").
A phrase whose slot cannot be filled grammatically is not used; the generic phrases are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SLOT = re.compile(r"\{(address|topic)(?::(\w+))?\}")
CASES = {"nomn", "gent", "datv", "accs", "ablt", "loct"}
INTRODUCTION = re.compile(
    r"(?i:меня зовут|my name is|i'm|i am|this is|это)\s+"
    r"([A-ZА-ЯЁ][a-zа-яё]+(?:\s+[A-ZА-ЯЁ][a-zа-яё]+){0,2})"
)


@lru_cache(maxsize=1)
def morph() -> Any:
    import pymorphy3

    return pymorphy3.MorphAnalyzer()


@dataclass
class Playbook:
    language: str
    address: str  # none | first_name | first_name_patronymic
    topics: dict[str, str]  # recognised word (lemma or stem) -> the topic's lemma as said to the customer
    situations: dict[str, list[str]]
    titles: dict[str, str] = field(default_factory=dict)  # reason -> the card's title, str.format values

    def title(self, reason: str, values: dict[str, Any]) -> str:
        """A hint card's title in the playbook's language (the reason's id if it has none)."""
        template = self.titles.get(reason)
        try:
            return template.format(**values) if template else reason
        except (KeyError, IndexError, ValueError):  # a template naming a value this hint has not
            return reason


def load_playbook(directory: Path, language: str) -> Playbook:
    path = directory / f"{language}.yaml"
    if not path.exists():
        path = directory / "en.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Playbook(
        str(data.get("language", language)),
        str(data.get("address", "none")),
        {str(k): str(v) for k, v in (data.get("topics") or {}).items()},
        {k: list(v) for k, v in (data.get("situations") or {}).items()},
        {str(k): str(v) for k, v in (data.get("titles") or {}).items()},
    )


@dataclass
class CallContext:
    """What the call has told us that phrases may use: the customer's name parts and the topic."""

    first_name: str | None = None
    patronymic: str | None = None
    topic: str | None = None  # a lemma from the playbook's topics

    def learn(self, text: str, playbook: Playbook) -> None:
        if self.topic is None:
            self.topic = _topic(text, playbook)
        if self.first_name is None:
            self._name(text, playbook.language)

    def _name(self, text: str, language: str) -> None:
        m = INTRODUCTION.search(text)
        if not m:
            return
        parts = m.group(1).split()
        if language.startswith("ru"):
            tags = [morph().parse(p)[0].tag for p in parts]
            self.first_name = next((p for p, t in zip(parts, tags, strict=True) if "Name" in t), None)
            self.patronymic = next((p for p, t in zip(parts, tags, strict=True) if "Patr" in t), None)
        else:
            self.first_name = parts[0]


def _topic(text: str, playbook: Playbook) -> str | None:
    words = re.findall(r"[\w-]+", text.lower())
    for w in words:
        key = morph().parse(w)[0].normal_form if playbook.language.startswith("ru") else w.rstrip("s")
        if key in playbook.topics:
            return playbook.topics[key]
    return None


def render(template: str, ctx: CallContext, playbook: Playbook) -> str | None:
    """The phrase with its slots filled, or None when a slot cannot be filled grammatically."""
    out, last = [], 0
    for m in SLOT.finditer(template):
        value = _address(ctx, playbook) if m.group(1) == "address" else _topic_form(ctx, playbook, m.group(2))
        if value is None:
            return None
        out.append(template[last : m.start()])
        out.append(value)
        last = m.end()
    out.append(template[last:])
    return "".join(out)


def _address(ctx: CallContext, playbook: Playbook) -> str | None:
    if playbook.address == "first_name_patronymic":
        return f"{ctx.first_name} {ctx.patronymic}" if ctx.first_name and ctx.patronymic else None
    if playbook.address == "first_name":
        return ctx.first_name
    return None


def _topic_form(ctx: CallContext, playbook: Playbook, case: str | None) -> str | None:
    if ctx.topic is None:
        return None
    if not playbook.language.startswith("ru"):
        return ctx.topic
    if case is None or case not in CASES:
        return None
    parse = next((p for p in morph().parse(ctx.topic) if "NOUN" in p.tag and "sing" in p.tag), None)
    form = parse.inflect({case, "sing"}) if parse is not None else None
    return str(form.word) if form is not None else None
