"""Calibrate the customer-state model (callsense/stages/customer_state.py) on real support chats with
human frustration labels (MAIA-DQE dev, read from ../shared/data at run time; its licence allows no
copy, so nothing of it is written).

    .venv/bin/python scripts/calibrate_customer_state.py --data ../shared/data

The model is a logistic regression on leaky sums of each customer turn's evidence. Its target is "the
customer's current or previous turn shows frustration or anger" (`--window 2`): a state that lasts,
not one sentence. For each decay it prints the log-loss over five folds of whole dialogues (no dialogue
is in both the fit and the check) and what the operator's cue would do on those held-out folds (the
share of dialogues with two or more frustrated sentences that get it, of calm ones that get it), at each
probability, with and without the rule that frustration shows in two of the customer's last four turns;
then the weights fitted on every dialogue for the decay asked for (`--decay`; else the one with the
lowest log-loss): put them in `CustomerStateSettings`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold

from callsense.bench.datasets import LabelledDialogue, maia_dialogues
from callsense.config import CustomerStateSettings, Settings, load_settings
from callsense.stages.customer_state import TurnEvidence
from callsense.stages.hints import complaint_evidence
from callsense.stages.intents import classifier_for
from callsense.stages.text_emotion import TextEmbedder, TextEmotion

TEXT_FEATURES = 3  # negative, positive, complaint (the voice has no labels here)


def evidence(settings: Settings, dialogues: list[LabelledDialogue]) -> list[tuple[list[TurnEvidence], list[int]]]:
    """Each dialogue's customer turns as the hint stage reads them, with the annotators' labels."""
    model = TextEmotion.load(settings.models)
    classifier = classifier_for(settings.hints.intents_dir, "customer", TextEmbedder(settings.models))
    out = []
    for d in dialogues:
        turns = [t for t in d.turns if t.role == "customer"]
        scores = model.score([t.text for t in turns])
        xs = []
        for i, (t, sc) in enumerate(zip(turns, scores, strict=True)):
            reading = classifier.read(t.text)
            negative = max(sc.sentiment["negative"], sc.negative_max)
            complaint = complaint_evidence(reading) if reading else 0.0
            xs.append(TurnEvidence(f"t{i}", t.text[:80], negative, sc.sentiment["positive"], complaint))
        out.append((xs, [t.upset for t in turns]))
    return out


def target(upset: list[int], window: int) -> np.ndarray:
    """1 where the customer's turn or one of the `window - 1` before it shows frustration or anger."""
    flags = np.asarray(upset) > 0
    return np.asarray([flags[max(0, i - window + 1) : i + 1].any() for i in range(flags.size)], int)


def design(turns: list[TurnEvidence], decay: float) -> np.ndarray:
    """The leaky sums s_t / w: the state is linear in the weights for a fixed decay."""
    acc = np.zeros(TEXT_FEATURES)
    rows = []
    for x in turns:
        acc = decay * acc + np.asarray(x.features()[:TEXT_FEATURES])
        rows.append(acc.copy())
    return np.asarray(rows).reshape(-1, TEXT_FEATURES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--window", type=int, default=2, help="customer turns a shown frustration counts for")
    ap.add_argument("--decay", type=float, default=None, help="fit at this decay (default: lowest log-loss)")
    args = ap.parse_args()
    settings = load_settings()
    data = evidence(settings, maia_dialogues(args.data))
    y = np.concatenate([target(labels, args.window) for _, labels in data])
    groups = np.concatenate([np.full(len(labels), i) for i, (_, labels) in enumerate(data)])
    print(f"{len(data)} dialogues, {y.size} customer turns, {int(y.sum())} with frustration or anger")
    best = None
    for decay in (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
        x = np.concatenate([design(turns, decay) for turns, _ in data])
        p = np.zeros(y.size)
        for fit, check in GroupKFold(5).split(x, y, groups):
            p[check] = LogisticRegression(C=1.0).fit(x[fit], y[fit]).predict_proba(x[check])[:, 1]
        loss = log_loss(y, p)
        print(f"\ndecay {decay:.2f}: cross-validated log-loss {loss:.4f}")
        cues(data, p, settings.hints.customer_state)
        if best is None or loss < best[0]:
            best = (loss, decay)
    assert best is not None
    decay = best[1] if args.decay is None else args.decay
    x = np.concatenate([design(turns, decay) for turns, _ in data])
    lr = LogisticRegression(C=1.0).fit(x, y)
    w = lr.coef_[0]
    print(
        f"\ndecay: {decay}\nbias: {lr.intercept_[0]:.3f}\nw_negative: {w[0]:.3f}\nw_positive: {w[1]:.3f}\n"
        f"w_complaint: {w[2]:.3f}"
    )


def shown(turns: list[TurnEvidence], i: int, s: CustomerStateSettings) -> bool:
    """The cue's second condition at turn i: `cue_turns` of the last `cue_window` turns read negative."""
    return sum(x.negative >= s.cue_negative for x in turns[max(0, i - s.cue_window + 1) : i + 1]) >= s.cue_turns


def cues(data: list[tuple[list[TurnEvidence], list[int]]], p: np.ndarray, s: CustomerStateSettings) -> None:
    """Dialogue by dialogue, on the held-out predictions: who would get a cue at each probability, on the
    probability alone and with the negative-turns rule."""
    alone, ruled, kinds, at = [], [], [], 0
    for turns, labels in data:
        q = p[at : at + len(turns)]
        alone.append(q.max() if turns else 0.0)
        ruled.append(max((q[i] for i in range(len(turns)) if shown(turns, i, s)), default=0.0))
        kinds.append("frustrated" if sum(labels) >= 2 else "calm" if sum(labels) == 0 else "one")
        at += len(turns)
    kind = np.asarray(kinds)
    for cut in (0.25, 0.3, 0.35, 0.4):
        row = []
        for name, peak in (("p alone", np.asarray(alone)), (f"{s.cue_turns} of {s.cue_window} negative", np.asarray(ruled))):
            row.append(
                f"{name}: frustrated {np.mean(peak[kind == 'frustrated'] >= cut):.2f}, "
                f"calm {np.mean(peak[kind == 'calm'] >= cut):.2f}"
            )
        print(f"  cue at p >= {cut:.2f}: " + "; ".join(row))


if __name__ == "__main__":
    main()
