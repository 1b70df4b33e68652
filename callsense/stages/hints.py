"""Escalation detection and suggested phrases for the operator.

Signals: explicit escalation intents in the customer's words (ru/en patterns: asking for a
manager, threatening a complaint to the regulator, a lawyer or social media, closing the account,
"I have called N times"), negative valence with arousal rising against the customer's own start,
a raised voice, repeated requests, operator interruptions, long silences, and the operator's own
tone. Each hint carries its evidence and 1-3 phrases from the playbook in the call's language,
filled from the call (the customer's name and problem) or not used at all. A cooldown per reason
keeps the operator from being flooded; critical hints also go to the supervisor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callsense.config import HintSettings
from callsense.events import Emotion, Hint, Overlap, TranscriptFinal
from callsense.stages.phrases import CallContext, Playbook, load_playbook, render

# reason -> (severity, patterns). Patterns are intents, matched on the customer's words only.
INTENTS: dict[str, tuple[str, list[str]]] = {
    "supervisor_request": ("critical", [
        r"\b(позовите|позови|дайте|соедините|переключите|пригласите)\b.{0,30}\b(руководител\w*|начальник\w*|"
        r"старш\w*|менеджер\w*|директор\w*)",
        r"\b(хочу|буду|желаю) (поговорить|говорить) с (руководител|начальник|старш|менеджер|директор)\w*",
        r"\b(speak|talk) (to|with) (a|an|the|your) (manager|supervisor|boss|someone senior)",
        r"\b(get|put|give) me (a|the|your) (manager|supervisor)", r"\bescalate (this|it|my)",
    ]),
    "complaint_threat": ("critical", [
        r"\b(напишу|подам|пожалуюсь|буду жаловаться|обращусь)\b.{0,40}\b(жалоб\w*|претензи\w*|центробанк\w*|"
        r"ЦБ|центральн\w* банк\w*|банк росси\w*|суд\w*|прокуратур\w*|роспотребнадзор\w*|юрист\w*|адвокат\w*)",
        r"\b(жалоб\w*|претензи\w*) (в|во) \w+", r"\bв (суд|прокуратуру|центробанк|роспотребнадзор)\b",
        r"\b(fil(e|ing)|mak(e|ing)|lodg(e|ing)|submit(ting)?)( a)? (formal )?complaint",
        r"\b(sue|lawyer|attorney|legal action|court)\b",
        r"\b(regulator|ombudsman|cfpb|financial conduct authority)\b",
        r"\b(post|write|tell)\b.{0,30}\b(social media|twitter|facebook|reviews?|online)\b",
    ]),
    "close_account": ("critical", [
        # the customer's own decision (закрываю, закрою, закройте, хочу закрыть), not "you closed my account"
        r"\b(закрываю|закрою|закройте|закрывайте|закрыть|расторгаю|расторгну|расторгайте|расторгнуть)\b.{0,20}"
        r"\b(сч[её]т\w*|карт\w*|договор\w*|вклад\w*)",
        r"\b(уйду|перейду|переведу деньги) в другой банк", r"\bclose (my|the|our) (account|card)s?\b",
        r"\b(switch|move|moving) (to another|banks?|my money)", r"\bcancel (my|the) (card|account)",
    ]),
    "repeat_caller": ("warning", [
        r"\b(звоню|звонил\w*|обращаюсь|обращал\w*)\b.{0,20}\b(уже )?(\d+|два|три|четыре|пять|несколько|"
        r"десят\w*|много|который|сотый|третий|пятый) (раз|раза|день)",
        r"\b(уже|снова|опять) (звоню|обращаюсь)",
        r"\b(второй|третий|четв[её]ртый|пятый|десятый|который|\d+-?(й|ый|ий)) раз\b"
        r".{0,15}\b(звон\w*|обращ\w*)", r"\b(called|calling|phoned|contacted you)\b.{0,20}"
        r"\b(\d+|two|three|four|five|several|many|multiple) times", r"\bthe (third|fourth|fifth|\w+th) time\b",
        r"\b(again and again|keep calling|called before)\b",
    ]),
}
# Operator phrases a bank audit flags (said by the operator, never the customer).
OPERATOR_RED_FLAGS = [
    r"\b(успокойтесь|это не мои проблемы|это не ко мне|ничем не могу помочь|вы сами виноваты|"
    r"больше (я )?ничего (сделать )?не могу|ничего больше (сделать )?не могу)\b",
    r"\b(calm down|not my problem|nothing (more |else )?(that )?i can do|your own fault|i can't help you)\b",
]
@dataclass
class _Party:
    finals: list[TranscriptFinal] = field(default_factory=list)
    emotions: list[Emotion] = field(default_factory=list)


@dataclass
class HintEngine:
    settings: HintSettings
    language: str = "en"
    embed: Any = None  # callable(list[str]) -> np.ndarray, for repeated-request detection
    parties: dict[str, _Party] = field(default_factory=dict)
    last_fired: dict[str, float] = field(default_factory=dict)
    context: CallContext = field(default_factory=CallContext)
    interruptions: dict[str, int] = field(default_factory=dict)
    last_speech_end: float = 0.0
    count: int = 0  # hints made so far (their ids)
    _embeddings: list[tuple[str, np.ndarray, set[str], float]] = field(default_factory=list)
    _hold_announced: float = -1.0

    def __post_init__(self) -> None:
        self._playbooks: dict[str, Playbook] = {}

    # -- inputs --

    def push(self, ev: TranscriptFinal | Emotion | Overlap) -> list[Hint]:
        """The stage interface: any of the three inputs, dispatched by type."""
        if isinstance(ev, TranscriptFinal):
            return self.on_final(ev)
        if isinstance(ev, Emotion):
            return self.on_emotion(ev)
        return self.on_overlap(ev)

    def flush(self) -> list[Hint]:
        return []

    def tick(self, now: float, speaking: bool, heard_until: float = 0.0) -> list[Hint]:
        """Driven by stream time: a hold or silence is announced while it lasts (once per silence).
        `heard_until`: where the voice activity detector last heard a turn end, which may be ahead of
        the finals (a recording's turns are decoded in packs)."""
        last = max(self.last_speech_end, heard_until)
        silent = now - last
        if speaking or not last or silent < self.settings.silence_hold_s or self._hold_announced == last:
            return []
        self._hold_announced = last
        return self._fire("long_silence", "info", _At(now), f"silence for {silent:.0f} s so far (on hold?)",
                          {"silence_s": round(silent, 1), "since": round(last, 2), "ongoing": True})

    def on_final(self, ev: TranscriptFinal) -> list[Hint]:
        self.parties.setdefault(ev.speaker, _Party()).finals.append(ev)
        if ev.language:
            self.language = ev.language if ev.role == "customer" or self.language == "en" else self.language
        self.last_speech_end = max(self.last_speech_end, ev.end)
        if ev.role == "operator":
            return self._operator_checks(ev)
        if ev.role != "customer":
            return []
        self._learn_context(ev)
        return self._intents(ev) + self._repeated_request(ev)

    def _intents(self, ev: TranscriptFinal) -> list[Hint]:
        """Regular expressions (high precision, they quote the words) and the classifier (paraphrases)."""
        found: dict[str, dict[str, Any]] = {}
        for reason, (_severity, patterns) in INTENTS.items():
            quote = _first_match(patterns, ev.text)
            if quote:
                found[reason] = {"quote": quote, "matched_by": "pattern"}
        guess = self._classify("customer", ev.text)
        if guess and guess[0] in INTENTS:
            found.setdefault(guess[0], {"quote": ev.text[:160], "matched_by": "classifier"})["p"] = round(guess[1], 2)
        hints: list[Hint] = []
        for reason, evidence in found.items():
            hints += self._fire(reason, INTENTS[reason][0], ev, f"customer said: \u201c{evidence['quote']}\u201d",
                                {"utterance_id": ev.utterance_id, "at": ev.start, **evidence})
        return hints

    def _classify(self, role: str, text: str) -> tuple[str, float] | None:
        if self.embed is None or not self.settings.intents_dir.exists():
            return None
        from callsense.stages.intents import classifier_for

        return classifier_for(self.settings.intents_dir, role, self.embed).classify(text)

    def on_emotion(self, ev: Emotion) -> list[Hint]:
        party = self.parties.setdefault(ev.speaker, _Party())
        party.emotions.append(ev)
        if ev.role != "customer":  # the operator's emotion is shown, never a hint or a score
            return []
        hints: list[Hint] = []
        first = party.emotions[0].arousal if len(party.emotions) > 1 else 0.0
        rise = ev.arousal - first
        if ev.valence <= self.settings.negative_valence and rise >= self.settings.arousal_rise:
            hints += self._fire("customer_upset", "warning", ev,
                                f"customer negative ({ev.valence:+.2f}) and more agitated than at the start "
                                f"(arousal {first:+.2f} \u2192 {ev.arousal:+.2f})",
                                {"utterance_id": ev.utterance_id, "valence": ev.valence, "arousal": ev.arousal,
                                 "arousal_rise": round(rise, 2), "voice": ev.evidence.get("voice")})
        voice = ev.evidence.get("voice")
        voice = voice if isinstance(voice, dict) else {}
        z = voice.get("z", {})
        enough = voice.get("voiced_s", 0.0) >= self.settings.raised_voice_min_s
        if enough and z.get("loudness_db", 0) >= 2.0 and ev.arousal > 0.3:
            hints += self._fire("raised_voice", "warning", ev,
                                f"customer's voice is {z['loudness_db']:.1f} sd louder than their usual",
                                {"utterance_id": ev.utterance_id, "loudness_z": z["loudness_db"]})
        return hints

    def on_overlap(self, ev: Overlap) -> list[Hint]:
        self.interruptions[ev.interrupter] = self.interruptions.get(ev.interrupter, 0) + 1
        op = [s for s, p in self.parties.items() if p.finals and p.finals[-1].role == "operator"]
        n = self.interruptions[ev.interrupter]
        if ev.interrupter in op and n >= self.settings.interruptions_warn:
            return self._fire("operator_interrupting", "warning", ev,
                              f"you have talked over the customer {n} times", {"count": n, "at": ev.start})
        return []

    # -- helpers --

    def _operator_checks(self, ev: TranscriptFinal) -> list[Hint]:
        quote = _first_match(OPERATOR_RED_FLAGS, ev.text)
        guess = self._classify("operator", ev.text)
        if quote or guess:
            return self._fire("operator_tone", "warning", ev, f"you said \u201c{quote or ev.text[:120]}\u201d",
                              {"utterance_id": ev.utterance_id, "quote": quote or ev.text[:160],
                               "matched_by": "pattern" if quote else "classifier",
                               **({"p": round(guess[1], 2)} if guess else {})})
        if re.search(r"\b(гарантирую|обещаю|100 ?%|точно вернут|i guarantee|i promise|definitely refund)\b",
                     ev.text, re.IGNORECASE):
            return self._fire("no_promises", "info", ev, "a promise the bank may not be able to keep",
                              {"utterance_id": ev.utterance_id, "quote": ev.text[:120]})
        return []

    def _learn_context(self, ev: TranscriptFinal) -> None:
        self.context.learn(ev.text, self._playbook())

    def _repeated_request(self, ev: TranscriptFinal) -> list[Hint]:
        """The same request again: close in meaning (e5) and sharing most of its content words (e5
        alone rates any two bank sentences alike)."""
        words = _content_words(ev.text)
        if self.embed is None or len(words) < 3:
            return []
        vec = np.asarray(self.embed([ev.text]))[0]
        hints: list[Hint] = []
        for uid, old, old_words, at in self._embeddings:
            if ev.start - at < self.settings.repeat_after_s:
                continue  # restating a request while explaining it is not asking again
            sim = float(vec @ old)
            overlap = len(words & old_words) / len(words | old_words)
            if sim >= self.settings.repeat_similarity and overlap >= self.settings.repeat_overlap:
                hints = self._fire("repeated_request", "warning", ev, "the customer is repeating an earlier request",
                                   {"utterance_id": ev.utterance_id, "repeats": uid, "similarity": round(sim, 2),
                                    "shared_words": round(overlap, 2)})
                break
        self._embeddings.append((ev.utterance_id, vec, words, ev.start))
        return hints

    def _fire(self, reason: str, severity: str, ev: Any, title: str, evidence: dict[str, Any]) -> list[Hint]:
        t = getattr(ev, "end", getattr(ev, "t", 0.0))
        last = self.last_fired.get(reason)
        if last is not None and t - last < self.settings.cooldown_s:
            return []
        self.last_fired[reason] = t
        self.count += 1
        return [Hint(
            hint_id=f"h{self.count}", severity=severity, reason=reason, title=title, evidence=evidence,
            phrases=self.phrases(reason), speaker=getattr(ev, "speaker", None),
            to_supervisor=severity == "critical",
        )]

    def _playbook(self) -> Playbook:
        lang = (self.language or "en")[:2]
        if lang not in self._playbooks:
            self._playbooks[lang] = load_playbook(self.settings.playbooks_dir, lang)
        return self._playbooks[lang]

    def phrases(self, reason: str, k: int = 2) -> list[str]:
        """Personal phrases first when their slots can be filled grammatically, then generic ones."""
        out = [p for template in self._playbook().situations.get(reason, [])
               if (p := render(template, self.context, self._playbook())) is not None]
        return out[:k]


@dataclass
class _At:
    """A moment of stream time, for hints that come from the clock rather than from an event."""

    end: float


NUMBER_WORDS = re.compile(r"^(zero|three|four|five|seven|eight|nine|eleven|twelve|twenty|thirty|forty|fifty|sixty|"
                          r"seventy|eighty|ninety|hundred|ноль|один|одна|четыре|пять|шесть|семь|восемь|девять|"
                          r"десять|\w+дцать|сорок|сто|\d+)$")


def _content_words(text: str) -> set[str]:
    """Words of four letters or more, cut to a stem of six (inflections of one word match); numbers
    read out (account or phone digits) are not a request."""
    return {w[:6] for w in re.findall(r"\w{4,}", text.lower()) if not NUMBER_WORDS.match(w)}


def _first_match(patterns: list[str], text: str) -> str | None:
    for p in patterns:
        m = re.search(p, text, re.IGNORECASE)
        if m:
            return m.group(0)
    return None
