"""Post-call output: transcripts (json/text/srt), chat-transcript analysis, and the quality report
(report.json + a self-contained report.html) with metrics, compliance and redaction."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from callsense.config import Settings
from callsense.events import AUDIO_DISCARDED, Emotion, Error, Event, Hint, Risk, TranscriptFinal
from callsense.reports.summary import call_summary
from callsense.stages.checklist import Checklist

# --- transcripts --------------------------------------------------------------------------------


def finals(events: list[Event]) -> list[TranscriptFinal]:
    """The call's finals in speaking order, one per turn. A live call's record already holds one, but
    the store keeps every event given (a recovered call's report is built from it): there a revised
    final replaces the earlier one of its `utterance_id`, and an empty one withdraws it."""
    latest: dict[str, TranscriptFinal] = {}
    for i, e in enumerate(events):  # in the order given (`seq`): the latest of a turn wins
        if isinstance(e, TranscriptFinal):
            latest[e.utterance_id or f"#{i}"] = e
    return sorted((f for f in latest.values() if f.text or not f.revision), key=lambda e: e.start)


def transcript_json(events: list[Event]) -> dict[str, Any]:
    fins = finals(events)
    langs = [f.language for f in fins if f.language]
    return {
        "language": max(set(langs), key=langs.count) if langs else None,
        "segments": [
            {
                "start": f.start,
                "end": f.end,
                "speaker": f.speaker,
                "role": f.role,
                "text": f.text,
                "language": f.language,
                "words": [w.model_dump() for w in f.words],
            }
            for f in fins
        ],
    }


def transcript_text(events: list[Event]) -> str:
    return "\n".join(f"[{f.start:7.2f}-{f.end:7.2f}] {f.role}: {f.text}" for f in finals(events))


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def transcript_srt(events: list[Event]) -> str:
    return "\n".join(
        f"{i}\n{_srt_time(f.start)} --> {_srt_time(f.end)}\n{f.role}: {f.text}\n" for i, f in enumerate(finals(events), 1)
    )


# --- chat / ticket transcripts -----------------------------------------------------------------


def load_dialogue(path: Path) -> dict[str, Any]:
    """Our format ({"language", "turns": [{"role", "text", "start"?, "end"?}]}) or ABCD's ("original")."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        data = data[0]
    if "original" in data:
        role = {"agent": "operator", "customer": "customer"}
        turns = [{"role": role[r], "text": t} for r, t in data["original"] if r in role]
        return {"language": "en", "turns": turns, "id": str(data.get("convo_id", path.stem))}
    if not isinstance(data.get("turns"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'turns' list (see docs/protocol.md)")
    return data


def analyze_dialogue(path: Path, settings: Settings) -> list[Event]:
    """Text-only calls (chat, tickets): the same emotion and hint stages as audio, minus the voice."""
    from callsense.events import CallEnded, CallStarted, Sequencer
    from callsense.stages.escalation import EscalationState
    from callsense.stages.fusion import Fuser
    from callsense.stages.hints import HintEngine
    from callsense.stages.text_emotion import TextEmbedder, TextEmotion

    dialogue = load_dialogue(path)
    seq = Sequencer(str(dialogue.get("id", path.stem)))
    lang = dialogue.get("language") or "en"
    text_model = TextEmotion.load(settings.models)
    fuser = Fuser(settings.emotion)
    hints = HintEngine(settings.hints, language=lang, embed=TextEmbedder(settings.models))
    escalation = EscalationState(hints.customer, settings.hints.recover_turns)
    events: list[Event] = [CallStarted(sample_rate=0, channels=["operator", "customer"], source="text", language=lang)]
    clock = 0.0
    scores = text_model.score([t["text"] for t in dialogue["turns"]]) if dialogue["turns"] else []
    for i, (turn, score) in enumerate(zip(dialogue["turns"], scores, strict=True)):
        start = float(turn.get("start", clock))
        end = float(turn.get("end", start + max(1.0, 0.4 * len(turn["text"].split()))))
        clock = end + 0.5
        speaker = turn.get("speaker", turn["role"])
        fin = TranscriptFinal(
            speaker=speaker,
            role=turn["role"],
            start=start,
            end=end,
            text=turn["text"],
            language=lang,
            utterance_id=f"t{i + 1}",
        )
        emo = fuser.fuse(speaker, turn["role"], start, end, fin.utterance_id, fin.text, score, None)
        said = [*hints.on_final(fin), *hints.on_emotion(emo)]
        signals: list[Emotion | Hint] = [emo, *said]
        risk = [r for item in signals for r in escalation.push(item)]
        turn_events: list[Event] = [*hints.tick(start, False), fin, emo, *said, *risk]
        for ev in turn_events:
            ev.t = end  # as if live: each event when its turn ended
            events.append(ev)
    events.append(CallEnded(duration_s=clock, reason="end of transcript", t=clock))
    for ev in events:
        seq.stamp(ev)
    return events


# --- metrics -------------------------------------------------------------------------------------


def call_metrics(events: list[Event], hold_s: float = 5.0) -> dict[str, Any]:
    fins = finals(events)
    emotions = [e for e in events if isinstance(e, Emotion)]
    hints = [e for e in events if isinstance(e, Hint)]
    feedback = [e for e in events if e.type == "hint_feedback"]
    ended = [e for e in events if e.type == "call_ended"]
    duration = ended[-1].duration_s if ended else (fins[-1].end if fins else 0.0)
    talk: dict[str, float] = defaultdict(float)
    words: dict[str, int] = defaultdict(int)
    for f in fins:
        talk[f.role] += f.end - f.start
        words[f.role] += len(f.text.split())
    silences = []
    last_end = 0.0
    for f in fins:
        if f.start - last_end >= hold_s:
            silences.append({"start": round(last_end, 2), "end": round(f.start, 2), "s": round(f.start - last_end, 1)})
        last_end = max(last_end, f.end)
    overlaps = [e for e in events if e.type == "overlap"]
    interruptions: dict[str, int] = defaultdict(int)
    overtalk: dict[str, float] = defaultdict(float)
    role_of = {f.speaker: f.role for f in fins}
    for o in overlaps:
        interruptions[role_of.get(o.interrupter, o.interrupter)] += 1
        overtalk[role_of.get(o.interrupter, o.interrupter)] += o.end - o.start
    cust = [e for e in emotions if e.role == "customer"]
    q = max(1, len(cust) // 4)
    start_val = sum(e.valence for e in cust[:q]) / q if cust else None
    end_val = sum(e.valence for e in cust[-q:]) / q if cust else None
    return {
        **customer_course(events, cust),
        "duration_s": round(duration, 2),
        "no_speech": not any(f.text.strip() for f in fins),
        "red_flag_phrases": sum(h.reason == "operator_tone" for h in hints),
        "talk_s": {k: round(v, 1) for k, v in talk.items()},
        "talk_listen_ratio": round(talk["operator"] / talk["customer"], 2) if talk.get("customer") else None,
        "speech_rate_wpm": {k: round(60 * words[k] / v, 1) for k, v in talk.items() if v > 0},
        "interruptions": dict(interruptions),
        "overtalk_s": {k: round(v, 1) for k, v in overtalk.items()},
        "silences": silences,
        "customer_valence_start": None if start_val is None else round(start_val, 3),
        "customer_valence_end": None if end_val is None else round(end_val, 3),
        "escalations": [
            {"t": h.t, "reason": h.reason, "severity": h.severity, "title": h.title} for h in hints if h.severity != "info"
        ],
        "hints": {
            "shown": len(hints),
            "accepted": sum(f.action == "accepted" for f in feedback),
            "dismissed": sum(f.action == "dismissed" for f in feedback),
        },
    }


ENDING_TURNS = 2  # the customer's thanks often comes one turn before the closing "no, thanks, that's all"


def customer_course(events: list[Event], customer: list[Emotion]) -> dict[str, Any]:
    """The customer state's course over the call (the last `risk` of each moment: one per customer turn)
    and how positive the customer ended: the most positive of their last `ENDING_TURNS` turns (thanks,
    relief)."""
    by_moment = {e.t: e.frustration for e in events if isinstance(e, Risk)}
    course = list(by_moment.values())
    texts = [e.evidence.get("text") for e in customer[-ENDING_TURNS:]]
    positive = [t.get("sentiment", {}).get("positive") for t in texts if isinstance(t, dict)]
    last = max((p for p in positive if p is not None), default=None)
    return {
        "customer_frustration": {"mean": round(sum(course) / len(course), 3), "end": course[-1], "peak": max(course)}
        if course
        else None,
        "customer_last_positive": last,
    }


def customer_experience(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """How the call went for the customer (0-100; per call; uses emotion readings). Never an input to
    anything about the operator. Half of it is how the customer ended (the positive probability of their
    last turns, `customer_course`), less the strain over the whole call (the mean probability that the customer was
    frustrated); critical escalations and long waits take points off. On labelled support chats its rank
    correlation with the task's success is in docs/benchmarks.md (`callsense bench --only hints`)."""
    if metrics["no_speech"]:
        return None
    course, last = metrics.get("customer_frustration"), metrics.get("customer_last_positive")
    strain = course["mean"] if course else 0.0
    ending = 0.5 if last is None else last
    mood = 100 * max(0.0, min(1.0, 0.5 + 0.5 * ending - strain))
    critical = sum(e["severity"] == "critical" for e in metrics["escalations"])
    waiting = sum(s["s"] for s in metrics["silences"])
    score = max(0.0, min(100.0, mood - 10 * critical - min(20.0, waiting / 6)))
    return {
        "score": round(score),
        "customer_mood": round(mood, 1),
        "frustration_mean": round(strain, 3),
        "ending_positive": None if last is None else round(last, 2),
        "critical_escalations": critical,
        "waiting_s": round(waiting, 1),
        "uses_emotion": True,
    }


def operator_conduct(metrics: dict[str, Any], compliance: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the operator did (0-100): the checklist, interruptions, long holds and red-flag phrases -
    evidence only, no emotion reading. Per-operator scorecards use this score alone."""
    if metrics["no_speech"]:
        return None
    judged = [c for c in compliance if c["passed"] is not None]
    passed = sum(c["passed"] for c in judged)
    checklist = 70 * passed / len(judged) if judged else 70.0
    conduct = 30.0
    conduct -= 4 * metrics["interruptions"].get("operator", 0)
    conduct -= 3 * len([s for s in metrics["silences"] if s["s"] > 30])
    conduct -= 5 * metrics["red_flag_phrases"]
    conduct = max(0.0, conduct)
    return {
        "score": round(checklist + conduct),
        "checklist": round(checklist, 1),
        "conduct": round(conduct, 1),
        "uses_emotion": False,
    }


# --- compliance -----------------------------------------------------------------------------------


def compliance(events: list[Event], judge: Checklist) -> list[dict[str, Any]]:
    """Each checklist item: pass/fail with the timestamped utterance that decided it - the live
    checklist's rules over the call's record (`stages.checklist`). A call whose end may be missing
    (`incomplete`) leaves its end-of-call items unjudged (`passed` None), never failed."""
    for fin in finals(events):
        judge.push(fin)
    return judge.verdict(cut=incomplete(events) is not None)


# --- report --------------------------------------------------------------------------------------


def build_report(
    events: list[Event], settings: Settings, source: str = "", audio: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The call's report. With `report.redact_pii` every text in it (transcript, compliance evidence,
    hint titles and phrases, errors) comes from redacted events: one redaction step for all of it."""
    from callsense.reports.privacy import redact_events

    fins = finals(events)
    lang = call_language(fins)
    red = settings.report.redact_pii
    if red:
        events = redact_events(events, lang)
        fins = finals(events)
    metrics = call_metrics(events, settings.report.hold_s)
    checks = compliance(events, Checklist.load(settings.report.audit_dir, lang))
    emotions = [e for e in events if isinstance(e, Emotion)]
    report = {
        "call_id": events[0].call_id if events else "",
        "source": source,
        "language": lang,
        "redacted": red,
        "metrics": metrics,
        "compliance": checks,
        # two scores, two purposes: only operator_conduct may feed anything about an operator
        "scores": {
            "customer_experience": customer_experience(metrics),
            "operator_conduct": operator_conduct(metrics, checks),
        },
        "flags": flags(events, metrics),
        "transcript": [{"start": f.start, "end": f.end, "role": f.role, "speaker": f.speaker, "text": f.text} for f in fins],
        "emotion_timeline": [
            {"t": e.end, "role": e.role, "speaker": e.speaker, "valence": e.valence, "arousal": e.arousal, "label": e.label}
            for e in emotions
        ],
        "hints": [
            {"t": h.t, "severity": h.severity, "reason": h.reason, "title": h.title, "phrases": h.phrases}
            for h in events
            if isinstance(h, Hint)
        ],
        "errors": [e.message for e in events if e.type == "error"],
        "audio": audio,  # kept audio: how much of it was silenced for personal data (None: not kept)
    }
    report["customer_summary"] = customer_summary(report)
    report["summary"] = call_summary(fins, lang, open_escalations(events))
    return report


def call_language(fins: list[TranscriptFinal]) -> str:
    """The language most of the call's turns were in (English when none says)."""
    langs = [f.language for f in fins if f.language]
    return max(set(langs), key=langs.count) if langs else "en"


def open_escalations(events: list[Event]) -> list[str]:
    """The critical hints of a call whose escalation was still latched when it ended (not calmed)."""
    risks = [e for e in events if isinstance(e, Risk)]
    if not risks or not risks[-1].latched:
        return []
    return list(dict.fromkeys(e.title for e in events if isinstance(e, Hint) and e.severity == "critical"))


def incomplete(events: list[Event]) -> str | None:
    """Why the call's audio may be cut short (the source left without a stop, or went silent), or None."""
    from callsense.events import INCOMPLETE

    return next((e.message for e in events if isinstance(e, Error) and e.code in INCOMPLETE), None)


def flags(events: list[Event], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """What a reader must know before trusting the report."""
    out: list[dict[str, Any]] = []
    cut = incomplete(events)
    if cut:
        out.append(
            {
                "flag": "incomplete",
                "text": f"{cut}. The end of the call may be missing: the checklist's end-of-call items are not judged",
            }
        )
    gaps = [e.message for e in events if isinstance(e, Error) and e.code == AUDIO_DISCARDED]
    if gaps:
        out.append(
            {
                "flag": "audio_gap",
                "text": f"the source withheld or discarded audio {len(gaps)} time(s) ({gaps[0]}): what was said "
                "then is not in this report",
            }
        )
    if metrics["no_speech"]:
        out.append({"flag": "no_speech", "text": "no speech was heard in this call: it is not scored"})
    guessed = [f for f in finals(events) if f.role_confidence < 1.0]
    if guessed:
        low = min(f.role_confidence for f in guessed)
        out.append(
            {
                "flag": "roles_guessed",
                "min_confidence": round(low, 2),
                "text": f"who is the operator was guessed from the conversation (confidence down to {low:.2f}); "
                "check the roles before acting on this report",
            }
        )
    return out


def write_report(
    events: list[Event], out: Path, settings: Settings, source: str = "", audio: dict[str, Any] | None = None
) -> Path:
    return save_report(build_report(events, settings, source, audio), out)


def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())


def save_report(report: dict[str, Any], out: Path) -> Path:
    """report.json and report.html of a built report in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    html = _templates().get_template("report.html").render(r=report, data=json.dumps(report, ensure_ascii=False))
    (out / "report.html").write_text(html, encoding="utf-8")
    return out


def with_disputes(html: str, disputes: list[dict[str, Any]], report: dict[str, Any] | None = None) -> str:
    """A report page with its disputes and their outcome (they come after the report is written: the
    server adds them each time the page is read)."""
    if not disputes:
        return html
    titles = {c["id"]: c["title"] for c in (report or {}).get("compliance", [])}
    section = _templates().get_template("disputes.html").render(disputes=disputes, titles=titles)
    at = html.rfind("</body>")
    return html[:at] + section + html[at:] if at >= 0 else html + section


SUMMARY = {
    "en": {
        "lasted": "Your call lasted {m:.1f} minutes.",
        "waited": "You were on hold or waiting {n} time(s), the longest {s:.0f} seconds.",
        "escalated": "The system noticed moments where you seemed dissatisfied and suggested to the operator how "
        "to help; a person, not the system, decided what to do.",
        "estimates": "Emotion readings are estimates from voice and words; they are never used for decisions "
        "about credit, accounts or employment.",
    },
    "ru": {
        "lasted": "Ваш звонок длился {m:.1f} мин.",
        "waited": "Вы ожидали на линии {n} раз(а), самое долгое ожидание — {s:.0f} с.",
        "escalated": "Система заметила моменты, когда вы, по-видимому, были недовольны, и подсказала оператору, "
        "как помочь; решения принимал человек, а не система.",
        "estimates": "Оценки эмоций — это приблизительные выводы по голосу и словам; они никогда не используются "
        "для решений о кредитах, счетах или о сотрудниках.",
    },
}


def customer_summary(report: dict[str, Any]) -> str:
    """Plain words for the customer, in the call's language: what the system noted about their call."""
    m, say = report["metrics"], SUMMARY.get(report["language"][:2], SUMMARY["en"])
    lines = [say["lasted"].format(m=m["duration_s"] / 60)]
    if m["silences"]:
        lines.append(say["waited"].format(n=len(m["silences"]), s=max(s["s"] for s in m["silences"])))
    if m["escalations"]:
        lines.append(say["escalated"])
    lines.append(say["estimates"])
    return " ".join(lines)
