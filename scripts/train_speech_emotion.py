"""Train the speech-emotion heads on speaker-normalised prosody (EmoDB, acted German).

Reproduces callsense/weights/speech_emotion.npz from ../shared/data/emotion_speech:
    .venv/bin/python scripts/train_speech_emotion.py --data ../shared/data
Cross-validation is leave-one-speaker-out; prints unweighted accuracy (mean per-class recall)
and per-class recall, and writes them to docs/speech_emotion_eval.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score

from callsense.audio.files import read_audio
from callsense.bench.datasets import EMODB_TO, HIGH_AROUSAL, emotion_speech
from callsense.stages.prosody import FEATURES, features, speaker_z, vector

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["anger", "joy", "sadness", "neutral", "fear"]


def load(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, spk, emo = [], [], []
    for item in emotion_speech(root):
        if item.emotion == "disgust":
            continue  # neither clearly high nor low arousal; too few clips to learn as a class
        f = features(read_audio(item.path)[0])
        if f is None:
            continue
        rows.append(vector(f))
        spk.append(item.speaker)
        emo.append(item.emotion)
    return np.array(rows), np.array(spk), np.array(emo)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    x, spk, emo = load(args.data)
    z = speaker_z(x, spk)
    arousal = np.array([e in HIGH_AROUSAL for e in emo], int)
    cat = np.array([CLASSES.index(EMODB_TO[e]) for e in emo])
    a_pred, c_pred = np.zeros_like(arousal), np.zeros_like(cat)
    for s in np.unique(spk):
        test = spk == s
        a_pred[test] = (
            LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000).fit(z[~test], arousal[~test]).predict(z[test])
        )
        c_pred[test] = (
            LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000).fit(z[~test], cat[~test]).predict(z[test])
        )
    report = {
        "clips": int(len(emo)),
        "speakers": sorted(set(spk.tolist())),
        "arousal_unweighted_accuracy": round(float(recall_score(arousal, a_pred, average="macro")), 3),
        "emotion_unweighted_accuracy": round(float(recall_score(cat, c_pred, average="macro")), 3),
        "emotion_recall_per_class": {
            c: round(float(r), 3) for c, r in zip(CLASSES, recall_score(cat, c_pred, average=None), strict=True)
        },
        "chance_emotion": round(1 / len(CLASSES), 3),
        "protocol": "leave-one-speaker-out over EmoDB speakers; features z-scored per speaker",
    }
    a_clf = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000).fit(z, arousal)
    c_clf = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000).fit(z, cat)
    np.savez_compressed(
        ROOT / "callsense" / "weights" / "speech_emotion.npz",
        features=np.array(FEATURES),
        emotions=np.array(CLASSES),
        arousal_W=a_clf.coef_.astype(np.float32),
        arousal_b=a_clf.intercept_.astype(np.float32),
        emotion_W=c_clf.coef_.astype(np.float32),
        emotion_b=c_clf.intercept_.astype(np.float32),
        prior_mean=x.mean(0).astype(np.float32),
        prior_std=(x.std(0) + 1e-6).astype(np.float32),
    )
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "speech_emotion_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
