"""`callsense bench --only hints`: are the hints right, and do calm calls stay quiet?

- Dev set (`bench/data/hints_dev.yaml`, 40 constructed dialogues, ru/en): critical-intent recall in
  the turn where the intent is said, precision of every critical hint, warning intents likewise,
  hints on calm dialogues, and the valence of sarcastic turns after negative events.
- Harper Valley dev calls (real speech, calm scripted tasks): hints per call on the human
  transcripts (18 calls) and through the whole audio pipeline on the 4 calls with two-channel audio.
- Harper Valley's agent dialog acts (human labels per turn) against the live checklist and the hold
  detection: per call, was the greeting (first 30 s) and the closing said, and did the checklist tick
  it (precision / recall over calls); per agent turn, a hold announced ("bear with me") or not. Cue
  rates: delivery cues (info) per calm call in both Harper Valley blocks.
- MAIA-DQE dev chats (real customers, human frustration labels per sentence, task success per
  dialogue): the share of dialogues with two or more frustrated or angry customer sentences that got
  a warning-or-stronger cue, the share of calm ones (no such sentence) with any alert, critical hints,
  and the customer-experience score's rank correlation with the labelled task success.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from callsense.bench.datasets import HARPER_VALLEY, LabelledDialogue, maia_dialogues
from callsense.config import SAMPLE_RATE, Settings
from callsense.events import Event
from callsense.registry import Models

DEV_SET = Path(__file__).parent / "data" / "hints_dev.yaml"
TURN_S = 3.0


def _as_chat(dialogue: dict[str, Any], folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The dialogue in the chat format `analyze` reads, with times (waits become silences)."""
    clock, turns = 0.0, []
    for turn in dialogue["turns"]:
        clock += float(turn.get("wait", 0.5))
        turns.append({"role": turn["role"], "text": turn["text"], "start": clock, "end": clock + TURN_S})
        clock += TURN_S
    path = folder / f"{dialogue['id']}.json"
    path.write_text(
        json.dumps({"language": dialogue["language"], "id": dialogue["id"], "turns": turns}, ensure_ascii=False),
        encoding="utf-8",
    )
    return path, turns


def _dev(settings: Settings) -> dict[str, Any]:
    from callsense.reports.report import analyze_dialogue

    dialogues = yaml.safe_load(DEV_SET.read_text(encoding="utf-8"))
    due_critical = hit_critical = fired_critical = right_critical = 0
    due_warning = hit_warning = 0
    calm_hints, sarcasm_valence, missed = 0, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for d in dialogues:
            path, _ = _as_chat(d, Path(tmp))
            events = analyze_dialogue(path, settings)
            hints = [e for e in events if e.type == "hint" and e.severity != "info"]
            emotions = {e.utterance_id: e for e in events if e.type == "emotion"}
            due = {f"t{i + 1}": t["hint"] for i, t in enumerate(d["turns"]) if t.get("hint")}
            fired = {(h.evidence.get("utterance_id"), h.reason) for h in hints}
            for uid, reason in due.items():
                critical = reason != "repeat_caller"
                ok = (uid, reason) in fired
                due_critical += critical
                hit_critical += critical and ok
                due_warning += not critical
                hit_warning += (not critical) and ok
                if not ok:
                    missed.append(f"{d['id']} {uid} {reason}")
            for h in hints:
                if h.severity == "critical":
                    fired_critical += 1
                    right_critical += due.get(h.evidence.get("utterance_id", "")) == h.reason
            if d["kind"] == "calm":
                calm_hints += len(hints)
            for i, t in enumerate(d["turns"]):
                if t.get("sarcasm"):
                    sarcasm_valence.append(emotions[f"t{i + 1}"].valence)
    return {
        "dialogues": len(dialogues),
        "critical_recall": round(hit_critical / max(due_critical, 1), 3),
        "critical_due": due_critical,
        "critical_precision": round(right_critical / max(fired_critical, 1), 3),
        "critical_fired": fired_critical,
        "repeat_caller_recall": round(hit_warning / max(due_warning, 1), 3),
        "hints_on_calm_dialogues": calm_hints,
        "sarcastic_turns": len(sarcasm_valence),
        "sarcastic_turns_positive": sum(v > 0 for v in sarcasm_valence),
        "sarcastic_valence_max": round(max(sarcasm_valence), 3) if sarcasm_valence else None,
        "missed": missed,
    }


def _harper_valley_text(settings: Settings, data: Path) -> dict[str, Any]:
    from callsense.bench.datasets import harper_valley_dialogues
    from callsense.reports.report import analyze_dialogue

    counts: Counter[str] = Counter()
    calls = 0
    with tempfile.TemporaryDirectory() as tmp:
        for call in harper_valley_dialogues(data):
            calls += 1
            turns = [
                {
                    "role": "operator" if t["speaker"] == "agent" else "customer",
                    "text": t["text"],
                    "start": t["start"],
                    "end": t["end"],
                }
                for t in call["turns"]
                if t.get("text")
            ]
            chat = Path(tmp) / f"{call['id']}.json"
            chat.write_text(json.dumps({"language": "en", "id": call["id"], "turns": turns}), encoding="utf-8")
            for ev in analyze_dialogue(chat, settings):
                if ev.type == "hint":
                    counts[f"{ev.severity}:{ev.reason}"] += 1
    return _per_call(counts, calls)


def _harper_valley_audio(settings: Settings, models: Models, data: Path) -> dict[str, Any]:
    """The 4 two-channel calls through the whole pipeline (agent = operator channel)."""
    from callsense.audio.codecs import AudioChunk
    from callsense.bench.datasets import harper_valley_calls
    from callsense.pipeline import CallPipeline

    counts: Counter[str] = Counter()
    calls = 0
    for _, audio in harper_valley_calls(data):
        calls += 1
        n = audio.shape[1]
        live = settings.profiles.live.model_copy(update={"partials": False})  # nobody reads along
        pipe = CallPipeline(settings, models, ["operator", "customer"], language="en", profile=live)
        step = SAMPLE_RATE // 2
        events: list[Event] = pipe.run(AudioChunk(audio[:, i : i + step], i / SAMPLE_RATE) for i in range(0, n, step))
        for ev in events:
            if ev.type == "hint":
                counts[f"{ev.severity}:{ev.reason}"] += 1
    return _per_call(counts, calls)


DELIVERY = ("operator_pace", "operator_monologue", "talk_ratio", "operator_interrupting")


def _per_call(counts: Counter[str], calls: int) -> dict[str, Any]:
    critical = sum(v for k, v in counts.items() if k.startswith("critical"))
    warnings = sum(v for k, v in counts.items() if k.startswith("warning"))
    delivery = sum(v for k, v in counts.items() if k.split(":")[1] in DELIVERY)
    return {
        "calls": calls,
        "critical": critical,
        "warnings": warnings,
        "warnings_per_call": round(warnings / max(calls, 1), 3),
        "delivery_cues_per_call": round(delivery / max(calls, 1), 3),
        "by_reason": dict(counts),
    }


def _prf(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Precision and recall of (said, detected) pairs, with the counts they rest on."""
    tp = sum(s and d for s, d in pairs)
    said, detected = sum(s for s, _ in pairs), sum(d for _, d in pairs)
    return {
        "said": said,
        "detected": detected,
        "precision": round(tp / detected, 3) if detected else None,
        "recall": round(tp / said, 3) if said else None,
    }


def _harper_valley_checklist(settings: Settings, data: Path) -> dict[str, Any]:
    """The live checklist and the hold detection against Harper Valley's labelled agent acts."""
    from callsense.bench.datasets import harper_valley_dialogues
    from callsense.events import TranscriptFinal
    from callsense.stages.checklist import Checklist
    from callsense.stages.delivery import HOLD_ANNOUNCED

    steps: dict[str, list[tuple[bool, bool]]] = {"greeting": [], "farewell": []}
    holds: list[tuple[bool, bool]] = []
    for call in harper_valley_dialogues(data):
        check = Checklist.load(settings.report.audit_dir, "en")
        said = [t for t in call["turns"] if t["speaker"] == "agent" and t.get("text")]
        agent = [t for t in said if not re.fullmatch(r"(\s*\[[^\]]*\])+\s*", t["text"])]  # not "[noise]" alone
        for i, t in enumerate(agent):
            check.push(
                TranscriptFinal(
                    speaker="ch0", role="operator", start=t["start"], end=t["end"], text=t["text"], utterance_id=f"a{i}"
                )
            )
            holds.append(("gridspace_bear_with_me" in t["dialog_acts"], bool(HOLD_ANNOUNCED.search(t["text"]))))
        passed = {c["id"]: c["passed"] for c in check.verdict()}
        greeted = any("gridspace_greeting" in t["dialog_acts"] and t["start"] <= 30 for t in agent)
        closed = any("gridspace_closing" in t["dialog_acts"] for t in agent[-3:])
        steps["greeting"].append((greeted, bool(passed.get("greeting"))))
        steps["farewell"].append((closed, bool(passed.get("farewell"))))
    return {
        "calls": len(steps["greeting"]),
        **{f"step_{k}": _prf(v) for k, v in steps.items()},
        "hold_announced_turns": _prf(holds),
    }


def maia_chat(d: LabelledDialogue, folder: Path) -> Path:
    """A labelled dialogue in the chat format `analyze` reads, in a temporary folder (the corpus's licence
    allows no converted copy to be kept)."""
    path = folder / "dialogue.json"
    turns = [{"role": t.role, "text": t.text} for t in d.turns]
    path.write_text(json.dumps({"language": "en", "id": d.id, "turns": turns}), encoding="utf-8")
    return path


def _spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    return None if len(x) < 3 else round(float(spearmanr(x, y).statistic), 3)


def _maia(settings: Settings, data: Path) -> dict[str, Any] | None:
    from callsense.reports.report import analyze_dialogue, call_metrics, customer_experience

    dialogues = maia_dialogues(data)
    if not dialogues:
        return None
    upset_alerted = upset = calm_alerted = calm = one = one_alerted = 0
    critical: list[str] = []
    cx: list[float] = []
    success: list[float] = []
    by_reason: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for d in dialogues:
            events = analyze_dialogue(maia_chat(d, Path(tmp)), settings)
            alerts = [e for e in events if e.type == "hint" and e.severity != "info"]
            by_reason.update(f"{h.severity}:{h.reason}" for h in alerts)
            critical += [
                f"{d.id}: {h.reason} \u201c{h.evidence.get('quote', '')}\u201d" for h in alerts if h.severity == "critical"
            ]
            if d.upset_sentences >= 2:
                upset, upset_alerted = upset + 1, upset_alerted + bool(alerts)
            elif d.upset_sentences == 1:
                one, one_alerted = one + 1, one_alerted + bool(alerts)
            else:
                calm, calm_alerted = calm + 1, calm_alerted + bool(alerts)
            score = (customer_experience(call_metrics(events)) or {}).get("score")
            if score is not None and d.task_success is not None:
                cx.append(score)
                success.append(d.task_success)
    return {
        "dialogues": len(dialogues),
        "frustrated_dialogues": upset,
        "frustrated_alerted": round(upset_alerted / max(upset, 1), 3),
        "one_frustrated_sentence": one,
        "one_frustrated_alerted": round(one_alerted / max(one, 1), 3),
        "calm_dialogues": calm,
        "calm_alerted": round(calm_alerted / max(calm, 1), 3),
        "critical_hints": len(critical),
        "critical": critical,
        "cx_vs_task_success_spearman": _spearman(cx, success),
        "by_reason": dict(by_reason),
    }


def bench_hints(settings: Settings, models: Models, data: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"dev_set": _dev(settings)}
    maia = _maia(settings, data)
    if maia is not None:
        out["maia_dqe_dev"] = maia
    if (data / HARPER_VALLEY).exists():
        out["harper_valley_transcripts"] = _harper_valley_text(settings, data)
        out["harper_valley_audio"] = _harper_valley_audio(settings, models, data)
        out["harper_valley_checklist"] = _harper_valley_checklist(settings, data)
    return out
