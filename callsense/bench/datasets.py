"""Readers for the labelled data layout of ../shared/data (shared by training and `callsense bench`).

Each reader yields plain records; label mapping to callsense's classes lives here so training and
evaluation agree on it.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

EMOTIONS = ["anger", "sadness", "joy", "fear", "surprise", "neutral"]
SENTIMENTS = ["negative", "neutral", "positive"]

# GoEmotions' 28 labels folded into Ekman-style classes (as the GoEmotions paper groups them).
GOEMOTIONS_TO = {
    "anger": "anger",
    "annoyance": "anger",
    "disapproval": "anger",
    "disgust": "anger",
    "fear": "fear",
    "nervousness": "fear",
    "joy": "joy",
    "amusement": "joy",
    "approval": "joy",
    "excitement": "joy",
    "gratitude": "joy",
    "love": "joy",
    "optimism": "joy",
    "relief": "joy",
    "pride": "joy",
    "admiration": "joy",
    "desire": "joy",
    "caring": "joy",
    "sadness": "sadness",
    "disappointment": "sadness",
    "embarrassment": "sadness",
    "grief": "sadness",
    "remorse": "sadness",
    "surprise": "surprise",
    "realization": "surprise",
    "confusion": "surprise",
    "curiosity": "surprise",
    "neutral": "neutral",
}
EMOTION_SENTIMENT = {"anger": "negative", "sadness": "negative", "fear": "negative", "joy": "positive", "neutral": "neutral"}


@dataclass
class TextItem:
    text: str
    lang: str
    source: str
    split: str  # "train" or "dev"
    emotion: str | None = None
    sentiment: str | None = None


def _dev_by_hash(key: str, percent: int = 20) -> str:
    """A fixed, content-based split for sets that ship without one."""
    return "dev" if int(hashlib.md5(key.encode()).hexdigest(), 16) % 100 < percent else "train"


def cedr(root: Path) -> Iterator[TextItem]:
    path = root / "text" / "ru_cedr" / "cedr_train.tsv"
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            labels = [x for x in row["labels"].split(",") if x]
            if len(labels) != 1:
                continue
            emo = "neutral" if labels[0] == "no_emotion" else labels[0]
            yield TextItem(row["text"], "ru", "cedr", _dev_by_hash(row["id"]), emo, EMOTION_SENTIMENT.get(emo))


def goemotions(root: Path) -> Iterator[TextItem]:
    folder = root / "text" / "en_ru_goemotions"
    path = folder / "ru-go-emotions-simplified-validation.csv"
    if not path.exists():
        return
    import yaml

    names = yaml.safe_load((folder / "id_to_label.yaml").read_text())
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ids = [int(x) for x in row["labels"].strip("[]").split()]
            groups = {GOEMOTIONS_TO[names[i]] for i in ids}
            if len(groups) != 1:
                continue
            emo = groups.pop()
            split = _dev_by_hash(row["id"])
            for lang, text in (("en", row["text"]), ("ru", row["ru_text"])):
                yield TextItem(text, lang, "goemotions", split, emo, EMOTION_SENTIMENT.get(emo))


def meld(root: Path) -> Iterator[TextItem]:
    folder = root / "text" / "en_meld_text"
    for name, split in (("train_sent_emo.csv", "train"), ("dev_sent_emo.csv", "dev")):
        path = folder / name
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                emo = row["Emotion"].strip().lower()
                emo = "anger" if emo == "disgust" else emo
                text = row["Utterance"].replace("\u2019", "'").replace("\x92", "'")
                yield TextItem(text, "en", "meld", split, emo if emo in EMOTIONS else None, row["Sentiment"].strip().lower())


def emobank(root: Path) -> Iterator[TextItem]:
    path = root / "text" / "en_emobank" / "emobank.csv"
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            v = float(row["V"])
            senti = "positive" if v >= 3.4 else "negative" if v <= 2.6 else "neutral"
            split = "dev" if row["split"] in ("dev", "test") else "train"
            yield TextItem(row["text"], "en", "emobank", split, None, senti)


def vader_ratings(root: Path) -> Iterator[TextItem]:
    folder = root / "text" / "en_vader_hutto2014"
    for path in sorted(folder.glob("*_GroundTruth.txt")):
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    continue
                score = float(parts[1])
                senti = "positive" if score >= 0.75 else "negative" if score <= -0.75 else "neutral"
                yield TextItem(parts[2], "en", "vader", _dev_by_hash(path.stem + parts[0]), None, senti)


TEXT_SETS = {"cedr": cedr, "goemotions": goemotions, "meld": meld, "emobank": emobank, "vader": vader_ratings}


def text_items(root: Path) -> list[TextItem]:
    return [item for reader in TEXT_SETS.values() for item in reader(root) if item.text.strip()]


@dataclass
class SpeechItem:
    path: Path
    speaker: str
    emotion: str


# EmoDB's seven classes folded to callsense's; arousal is the well-known high/low split.
EMODB_TO = {
    "anger": "anger",
    "happiness": "joy",
    "sadness": "sadness",
    "neutral": "neutral",
    "boredom": "neutral",
    "fear": "fear",
    "disgust": "anger",
}
HIGH_AROUSAL = {"anger", "happiness", "fear", "disgust"}


def emotion_speech(root: Path) -> list[SpeechItem]:
    items = []
    for labels in sorted((root / "emotion_speech").glob("*/labels.tsv")):
        with labels.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                items.append(SpeechItem(labels.parent / row["audio"], row["speaker"], row["emotion"]))
    return items


@dataclass
class AsrItem:
    set: str
    id: str
    path: Path
    text: str
    channel: str = "mono"


def asr_items(root: Path) -> list[AsrItem]:
    items = []
    for tsv in sorted((root / "asr").glob("*/transcripts.tsv")):
        with tsv.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                if row.get("flag") == "non_speech_silence" or not row.get("text", "").strip():
                    continue
                if "NOT an independent" in row.get("reference_origin", ""):
                    continue  # a model's output is not a reference
                items.append(
                    AsrItem(tsv.parent.name, row["id"], tsv.parent / row["audio"], row["text"], row.get("channel", "mono"))
                )
    return items


HARPER_VALLEY = Path("calls") / "en_harper_valley_dev"


def harper_valley_dialogues(root: Path) -> Iterator[dict[str, Any]]:
    """Every Harper Valley dev call's record (transcript, names, audio paths), none without the folder."""
    import json

    path = root / HARPER_VALLEY / "dialogues.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    yield from (json.loads(line) for line in lines)


def harper_valley_calls(root: Path) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """The Harper Valley dev calls that have audio (real voices, English, 8 kHz, each party on its own
    line): the call's record and its stereo audio at 16 kHz, agent (operator) on channel 0, caller on 1."""
    import numpy as np

    from callsense.audio.files import read_audio

    for call in harper_valley_dialogues(root):
        if not call.get("has_audio"):
            continue
        parts = [read_audio(root / HARPER_VALLEY / call["audio"][side]["path"])[0] for side in ("agent", "caller")]
        audio = np.zeros((2, max(p.size for p in parts)), np.float32)
        for ch, part in enumerate(parts):
            audio[ch, : part.size] = part
        yield call, audio


def harper_valley_reference(call: dict[str, Any], speaker: str) -> str:
    """What one party said, from the human transcript (noise marks and unknown words left out)."""
    words = (w for t in call["turns"] if t["speaker"] == speaker and not t.get("nonspeech") for w in t["text"].split())
    return " ".join(w for w in words if w not in ("[noise]", "<unk>"))


MAIA_DQE = Path("dialogues") / "en_maia_dqe_dev"
# MAIA-DQE's emotion label names, in the order of the corpus's emotion_labels.txt (read from there when present)
MAIA_UPSET = {"frustration", "anger"}


@dataclass
class LabelledTurn:
    role: str  # "customer" or "operator"
    text: str  # the English side: the customer's machine translation, the agent's own words
    upset: int  # the turn's sentences labelled frustration or anger by the annotators


@dataclass
class LabelledDialogue:
    id: str
    turns: list[LabelledTurn]
    task_success: int | None  # 1-5
    dropped: bool

    @property
    def upset_sentences(self) -> int:
        return sum(t.upset for t in self.turns if t.role == "customer")


def maia_dialogues(root: Path) -> list[LabelledDialogue]:
    """MAIA-DQE support chats in English, with the annotators' labels. CC BY-ND: read here at run time,
    never written anywhere (no converted copy, no excerpt)."""
    import json

    folder = root / MAIA_DQE
    files = sorted(folder.glob("*.json"))
    if not files:
        return []
    names = (folder / "emotion_labels.txt").read_text(encoding="utf-8").split()
    upset = {i for i, name in enumerate(names) if name in MAIA_UPSET}
    out = []
    for path in files:
        for d in json.loads(path.read_text(encoding="utf-8")):
            turns = []
            for t in d["turns"]:
                customer = t["floor"] == "inbound"
                text = " ".join(t["text_mt"] if customer else t["text_src"]).strip()
                if text:
                    turns.append(
                        LabelledTurn(
                            "customer" if customer else "operator", text, sum(e in upset for e in t.get("Emotion") or [])
                        )
                    )
            meta = d.get("dialog") or {}
            success = meta.get("Task Sucess", meta.get("Task Success"))
            out.append(
                LabelledDialogue(
                    str(d["id"]),
                    turns,
                    int(success) if success is not None else None,
                    bool(meta.get("Dropped conversation")),
                )
            )
    return out
