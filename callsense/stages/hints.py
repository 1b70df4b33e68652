"""Escalation detection and suggested phrases for the operator.

Signals: explicit escalation intents in the customer's words (ru/en patterns: asking for a
manager, threatening a complaint to the regulator, a lawyer or social media, closing the account,
"I have called N times"), the customer's state over the conversation (stages/customer_state.py: a
calibrated probability that the customer is frustrated, built up over turns, which cues the operator
to acknowledge it before anything escalates), a raised voice, repeated requests, operator
interruptions, long silences, and the operator's own tone. Critical hints come only from an explicit
request or threat and quote the sentence that made them; anger without one goes to the customer
state. Each hint carries its evidence and 1-3 phrases from the playbook in the call's language,
filled from the call (the customer's name and problem) or not used at all. A cooldown per reason
keeps the operator from being flooded; critical hints also go to the supervisor.
"""

from __future__ import annotations

import re
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from callsense.config import HintSettings
from callsense.events import Emotion, Hint, Overlap, TranscriptFinal
from callsense.stages.customer_state import CustomerState, TurnEvidence
from callsense.stages.delivery import HOLD_ANNOUNCED, Delivery
from callsense.stages.intents import Reading
from callsense.stages.phrases import CallContext, Playbook, load_playbook, render

# reason -> (severity, patterns). Patterns are intents, matched on the customer's words only.
INTENTS: dict[str, tuple[str, list[str]]] = {
    "supervisor_request": (
        "critical",
        [
            r"\b(позовите|позови|дайте|соедините|переключите|пригласите)\b.{0,30}\b(руководител\w*|начальник\w*|начальств\w*|"
            r"старш\w*|менеджер\w*|директор\w*)",
            r"\b(хочу|буду|желаю) (поговорить|говорить) с (руководител|начальник|старш|менеджер|директор)\w*",
            r"\b(speak|talk) (to|with) (a|an|the|your) (manager|supervisor|boss|someone senior)",
            r"\b(get|put|give) me (a|the|your) (manager|supervisor)",
            r"\bescalate (this|it|my)",
        ],
    ),
    "complaint_threat": (
        "critical",
        [
            r"\b(напишу|подам|пожалуюсь|буду жаловаться|обращусь)\b.{0,40}\b(жалоб\w*|претензи\w*|центробанк\w*|"
            r"ЦБ|центральн\w* банк\w*|банк росси\w*|суд\w*|прокуратур\w*|роспотребнадзор\w*|юрист\w*|адвокат\w*)",
            r"\b(жалоб\w*|претензи\w*) (в|во) \w+",
            r"\bв (суд|прокуратуру|центробанк|роспотребнадзор)\b",
            r"\b(fil(e|ing)|mak(e|ing)|lodg(e|ing)|submit(ting)?)( a)? (formal )?complaint",
            r"\b(sue|lawyer|attorney|legal action|court)\b",
            r"\b(regulator|ombudsman|cfpb|financial conduct authority)\b",
            r"\b(post|write|tell)\b.{0,30}\b(social media|twitter|facebook|reviews?|online)\b",
        ],
    ),
    "close_account": (
        "critical",
        [
            # the customer's own decision (закрываю, закрою, закройте, хочу закрыть), not "you closed my account"
            r"\b(закрываю|закрою|закройте|закрывайте|закрыть|расторгаю|расторгну|расторгайте|расторгнуть)\b.{0,20}"
            r"\b(сч[её]т\w*|карт\w*|договор\w*|вклад\w*)",
            r"\b(уйду|перейду|переведу деньги) в другой банк",
            r"\bclose (my|the|our) (account|card)s?\b",
            # "switch to another bank", never "switch to another device"
            r"\b(switch(ing)?|mov(e|ing)) (to another (bank|provider)|banks\b|my (money|savings|accounts?)\b)",
            r"\bcancel (my|the) (card|account)",
        ],
    ),
    "repeat_caller": (
        "warning",
        [
            r"\b(звоню|звонил\w*|обращаюсь|обращал\w*)\b.{0,20}\b(уже )?(\d+|два|три|четыре|пять|несколько|"
            r"десят\w*|много|который|сотый|третий|пятый) (раз|раза|день)",
            r"\b(уже|снова|опять) (звоню|обращаюсь)",
            r"\b(второй|третий|четв[её]ртый|пятый|десятый|который|\d+-?(й|ый|ий)) раз\b"
            r".{0,15}\b(звон\w*|обращ\w*)",
            r"\b(called|calling|phoned|contacted you)\b.{0,20}"
            r"\b(\d+|two|three|four|five|several|many|multiple) times",
            r"\bthe (third|fourth|fifth|\w+th) time\b",
            r"\b(again and again|keep calling|called before)\b",
        ],
    ),
}
COMPLAINT = "frustration"  # the intent examples' class for angry or frustrated words without a request
# What an explicit request names: a critical hint from the classifier alone (a paraphrase no pattern
# caught) needs its sentence to name who or what the request is about - a person in charge, a body to
# complain to, the account or the bank. "I will cover the survey" or «Разблокируйте сейчас же» read
# close to a threat in e5's space and name none of these.
REQUEST_OBJECTS: dict[str, str] = {
    "supervisor_request": r"\b(manager|supervisor|boss|senior|superior|in charge|responsible|above you|higher up|"
    r"decision|руководств\w*|руководител\w*|начальни\w*|начальств\w*|старш\w*|менеджер\w*|"
    r"директор\w*|главн\w*|решени\w*|отвечает|ответствен\w*)",
    "complaint_threat": r"\b(complain\w*|complaint|lawyer|attorney|solicitor|court|sue|legal|regulator|ombudsman|"
    r"authorit\w*|review|social media|press|жалоб\w*|жаловат\w*|пожалу\w*|претензи\w*|суд\w*|юрист\w*|"
    r"адвокат\w*|прокуратур\w*|ЦБ|центробанк\w*|роспотребнадзор\w*|омбудсмен\w*|соцсет\w*|"
    r"отзыв\w*|СМИ)",
    "close_account": r"\b(account|card|bank|banking|money|savings|deposit|mortgage|loan|elsewhere|leaving|сч[её]т\w*|"
    r"карт\w*|банк\w*|вклад\w*|ипотек\w*|договор\w*|деньг\w*|ухожу|уйду)",
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
    # a recording's finals come in packs, long after their words, so a silence cannot be told while it
    # lasts: it is found between the call's turns at the end, in the language its words were in
    silence_at_end: bool = False
    customer_state: InitVar[CustomerState | None] = None  # shared with the escalation stage, else its own

    def __post_init__(self, customer_state: CustomerState | None) -> None:
        self._playbooks: dict[str, Playbook] = {}
        self.customer = customer_state or CustomerState(self.settings.customer_state)
        self._complaint: dict[str, float] = {}  # utterance id -> the complaint class's probability
        self._escalated: set[str] = set()  # utterance ids with an explicit critical request or threat
        self._cue_armed = True
        self.delivery = Delivery(self.settings.delivery)
        self._delivery_at = -1e9  # stream time of the last delivery cue

    # -- inputs --

    def push(self, ev: TranscriptFinal | Emotion | Overlap) -> list[Hint]:
        """The stage interface: any of the three inputs, dispatched by type."""
        if isinstance(ev, TranscriptFinal):
            return self.on_final(ev)
        if isinstance(ev, Emotion):
            return self.on_emotion(ev)
        return self.on_overlap(ev)

    def flush(self) -> list[Hint]:
        return self._silences_between_turns() if self.silence_at_end else []

    def state(self) -> int:
        """A checkpoint needs only how many hints were made (the next hint's id)."""
        return self.count

    def restore(self, state: int) -> None:
        self.count = state

    def tick(self, now: float, speaking: bool, heard_until: float = 0.0) -> list[Hint]:
        """Driven by stream time: a hold or silence is announced while it lasts (once per silence).
        `heard_until`: where the voice activity detector last heard a turn end, which may be ahead of
        the finals (a recording's turns are decoded in packs)."""
        last = max(self.last_speech_end, heard_until)
        silent = now - last
        if self.silence_at_end or speaking or not last or silent < self.settings.silence_hold_s:
            return []
        # the operator's last turn said the customer would wait (a hold): else say what is going on
        return self._silence(now, last, silent, abs(self.delivery.hold_announced_at - self.last_speech_end) < 1.0)

    def _silence(self, now: float, last: float, silent: float, announced: bool) -> list[Hint]:
        if self._hold_announced == last:
            return []  # once per silence
        self._hold_announced = last
        return self._fire(
            "long_silence",
            "info",
            _At(now),
            {"seconds": round(silent)},
            {
                "silence_s": round(silent, 1),
                "since": round(last, 2),
                "ongoing": not self.silence_at_end,
                "hold_announced": announced,
            },
            title="long_silence" if announced else "long_silence_unannounced",
        )

    def _silences_between_turns(self) -> list[Hint]:
        """The record's silences: gaps of `silence_hold_s` or more between the turns of both parties, each
        told at the moment it reached that length, as a live call would have (announced: an operator turn
        that ended with the speech before it said the customer would wait)."""
        turns = sorted((f for p in self.parties.values() for f in p.finals), key=lambda f: f.start)
        hints: list[Hint] = []
        last, before = 0.0, list[TranscriptFinal]()  # the speech's end, and the turns that ended with it
        for fin in turns:
            silent = fin.start - last
            if last and silent >= self.settings.silence_hold_s:
                announced = any(f.role == "operator" and HOLD_ANNOUNCED.search(f.text) for f in before)
                hints += self._silence(last + self.settings.silence_hold_s, last, silent, announced)
            last = max(last, fin.end)
            before = [f for f in (*before, fin) if last - f.end < 1.0]
        return hints

    def _delivery(self, ev: TranscriptFinal) -> list[Hint]:
        """The operator's delivery (stages/delivery.py): quiet cues, one per `delivery.cooldown_s`."""
        if not self.settings.delivery.enabled:
            return []
        cues = self.delivery.push(ev)
        if not cues or ev.end - self._delivery_at < self.settings.delivery.cooldown_s:
            return []
        self._delivery_at = ev.end
        reason, values, evidence = cues[0]
        self.delivery.fired(reason)
        return self._fire(reason, "info", ev, values, evidence, cooldown=False)

    def on_final(self, ev: TranscriptFinal) -> list[Hint]:
        self.parties.setdefault(ev.speaker, _Party()).finals.append(ev)
        if ev.language:
            self.language = ev.language if ev.role == "customer" or self.language == "en" else self.language
        self.last_speech_end = max(self.last_speech_end, ev.end)
        delivery = self._delivery(ev)
        if ev.role == "operator":
            return self._operator_checks(ev) + delivery
        if ev.role != "customer":
            return []
        self._learn_context(ev)
        return self._intents(ev) + self._repeated_request(ev)

    def _intents(self, ev: TranscriptFinal) -> list[Hint]:
        """Regular expressions (high precision, they quote the words) and the classifier (paraphrases,
        quoting the sentence it read). The classifier's angry-but-no-request class feeds the customer
        state instead of a hint."""
        found: dict[str, dict[str, Any]] = {}
        for reason, (_severity, patterns) in INTENTS.items():
            quote = _first_match(patterns, ev.text)
            if quote:
                found[reason] = {"quote": quote, "matched_by": "pattern"}
        reading = self._read("customer", ev.text)
        if reading is not None:
            self._complaint[ev.utterance_id] = complaint_evidence(reading)
            guess = reading.strongest(set(INTENTS))
            if guess and self._classifier_may_fire(reading, guess):
                found.setdefault(guess[0], {"quote": guess[2][:160], "matched_by": "classifier"})["p"] = round(guess[1], 2)
        if any(INTENTS[reason][0] == "critical" for reason in found):
            self._escalated.add(ev.utterance_id)
        hints: list[Hint] = []
        for reason, evidence in found.items():
            hints += self._fire(
                reason,
                INTENTS[reason][0],
                ev,
                {"quote": evidence["quote"]},
                {"utterance_id": ev.utterance_id, "at": ev.start, **evidence},
            )
        return hints

    def _classifier_may_fire(self, reading: Reading, guess: tuple[str, float, str]) -> bool:
        """A critical hint from the classifier alone needs `critical_probability` and a sentence that names
        the request's object (`REQUEST_OBJECTS`); any hint needs its sentence to read as that request more
        than as plain frustration (anger is not a request)."""
        label, p, sentence = guess
        if INTENTS[label][0] == "critical" and (
            p < self.settings.critical_probability or not re.search(REQUEST_OBJECTS[label], sentence, re.IGNORECASE)
        ):
            return False
        row = reading.sentences.index(sentence)
        return p > float(reading.probs[row, reading.labels.index(COMPLAINT)]) if COMPLAINT in reading.labels else True

    def _read(self, role: str, text: str) -> Reading | None:
        if self.embed is None or not self.settings.intents_dir.exists():
            return None
        from callsense.stages.intents import classifier_for

        return classifier_for(self.settings.intents_dir, role, self.embed).read(text)

    def on_emotion(self, ev: Emotion) -> list[Hint]:
        party = self.parties.setdefault(ev.speaker, _Party())
        party.emotions.append(ev)
        if ev.role != "customer":  # the operator's emotion is shown, never a hint or a score
            return []
        hints = self._customer_state(ev)
        voice = ev.evidence.get("voice")
        voice = voice if isinstance(voice, dict) else {}
        z = voice.get("z", {})
        enough = voice.get("voiced_s", 0.0) >= self.settings.raised_voice_min_s
        if enough and z.get("loudness_db", 0) >= 2.0 and ev.arousal > 0.3:
            hints += self._fire(
                "raised_voice",
                "warning",
                ev,
                {"sd": round(z["loudness_db"], 1)},
                {"utterance_id": ev.utterance_id, "loudness_z": z["loudness_db"]},
            )
        return hints

    def on_overlap(self, ev: Overlap) -> list[Hint]:
        self.interruptions[ev.interrupter] = self.interruptions.get(ev.interrupter, 0) + 1
        op = [s for s, p in self.parties.items() if p.finals and p.finals[-1].role == "operator"]
        n = self.interruptions[ev.interrupter]
        if ev.interrupter in op and n >= self.settings.interruptions_warn:
            return self._fire(
                "operator_interrupting",
                "warning",
                ev,
                {"count": n},
                {"count": n, "at": ev.start},
            )
        return []

    def _customer_state(self, ev: Emotion) -> list[Hint]:
        """The turn's evidence into the customer state; a cue once it is likely the customer is frustrated,
        and another only after the state has fallen back below the re-arm level."""
        text = ev.evidence.get("text")
        sentiment = text.get("sentiment", {}) if isinstance(text, dict) else {}
        voice = ev.evidence.get("voice")
        arousal = voice.get("arousal", 0.0) if isinstance(voice, dict) else 0.0
        negative = max(float(sentiment.get("negative", 0.0)), float(text.get("negative_max", 0.0)) if text else 0.0)
        x = TurnEvidence(
            ev.utterance_id,
            str(ev.evidence.get("quote", ""))[:160],
            negative,
            float(sentiment.get("positive", 0.0)),
            self._complaint.pop(ev.utterance_id, 0.0),
            max(0.0, float(arousal)),
            float(ev.utterance_id in self._escalated),
        )
        self._escalated.discard(ev.utterance_id)  # read once, as the complaint probability is popped
        p = self.customer.push(x)
        cfg = self.settings.customer_state
        if p < cfg.rearm_probability:
            self._cue_armed = True
        # a turn that escalated has its critical card, which already acknowledges: no second card for it
        shown = self.customer.negative_turns() >= cfg.cue_turns  # more than one sharp sentence
        if p < cfg.cue_probability or not shown or not self._cue_armed or x.escalation:
            return []
        self._cue_armed = False
        why = self.customer.why()
        return self._fire(
            "customer_frustrated",
            "warning",
            ev,
            {"percent": round(100 * p)},
            {
                "utterance_id": ev.utterance_id,
                "probability": round(p, 2),
                "turns": [{"utterance_id": t.utterance_id, "quote": t.quote} for t in why],
            },
            cooldown=False,
        )

    # -- helpers --

    def _operator_checks(self, ev: TranscriptFinal) -> list[Hint]:
        quote = _first_match(OPERATOR_RED_FLAGS, ev.text)
        reading = self._read("operator", ev.text)
        guess = reading.strongest(set(reading.labels) - {"none"}) if reading else None
        if quote or guess:
            said = quote or (guess[2] if guess else ev.text)[:160]
            return self._fire(
                "operator_tone",
                "warning",
                ev,
                {"quote": said[:120]},
                {
                    "utterance_id": ev.utterance_id,
                    "quote": said,
                    "matched_by": "pattern" if quote else "classifier",
                    **({"p": round(guess[1], 2)} if guess else {}),
                },
            )
        if re.search(
            r"\b(гарантирую|обещаю|100 ?%|точно вернут|i guarantee|i promise|definitely refund)\b", ev.text, re.IGNORECASE
        ):
            return self._fire(
                "no_promises",
                "info",
                ev,
                {},
                {"utterance_id": ev.utterance_id, "quote": ev.text[:120]},
            )
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
                hints = self._fire(
                    "repeated_request",
                    "warning",
                    ev,
                    {},
                    {
                        "utterance_id": ev.utterance_id,
                        "repeats": uid,
                        "similarity": round(sim, 2),
                        "shared_words": round(overlap, 2),
                    },
                )
                break
        self._embeddings.append((ev.utterance_id, vec, words, ev.start))
        return hints

    def _fire(
        self,
        reason: str,
        severity: str,
        ev: Any,
        values: dict[str, Any],
        evidence: dict[str, Any],
        cooldown: bool = True,
        title: str | None = None,
    ) -> list[Hint]:
        """A hint card: its title (`title`, else the reason's) from the playbook of the call's language,
        filled with `values`."""
        t = getattr(ev, "end", getattr(ev, "t", 0.0))
        last = self.last_fired.get(reason)
        if cooldown and last is not None and t - last < self.settings.cooldown_s:
            return []
        self.last_fired[reason] = t
        self.count += 1
        return [
            Hint(
                hint_id=f"h{self.count}",
                severity=severity,
                reason=reason,
                title=self._playbook().title(title or reason, values),
                evidence=evidence,
                phrases=self.phrases(reason),
                speaker=getattr(ev, "speaker", None),
                to_supervisor=severity == "critical",
            )
        ]

    def _playbook(self) -> Playbook:
        lang = (self.language or "en")[:2]
        if lang not in self._playbooks:
            self._playbooks[lang] = load_playbook(self.settings.playbooks_dir, lang)
        return self._playbooks[lang]

    def phrases(self, reason: str, k: int = 2) -> list[str]:
        """Personal phrases first when their slots can be filled grammatically, then generic ones."""
        out = [
            p
            for template in self._playbook().situations.get(reason, [])
            if (p := render(template, self.context, self._playbook())) is not None
        ]
        return out[:k]


@dataclass
class _At:
    """A moment of stream time, for hints that come from the clock rather than from an event."""

    end: float


NUMBER_WORDS = re.compile(
    r"^(zero|three|four|five|seven|eight|nine|eleven|twelve|twenty|thirty|forty|fifty|sixty|"
    r"seventy|eighty|ninety|hundred|ноль|один|одна|четыре|пять|шесть|семь|восемь|девять|"
    r"десять|\w+дцать|сорок|сто|\d+)$"
)


def _content_words(text: str) -> set[str]:
    """Words of four letters or more, cut to a stem of six (inflections of one word match); numbers
    read out (account or phone digits) are not a request."""
    return {w[:6] for w in re.findall(r"\w{4,}", text.lower()) if not NUMBER_WORDS.match(w)}


def complaint_evidence(reading: Reading) -> float:
    """How likely the turn complains or asks for an escalation: the strongest of the frustration class and
    the escalation intents (a customer asking for a manager is rarely content), for the customer state."""
    return max(reading.probability(label) for label in (COMPLAINT, *INTENTS))


def _first_match(patterns: list[str], text: str) -> str | None:
    for p in patterns:
        m = re.search(p, text, re.IGNORECASE)
        if m:
            return m.group(0)
    return None
