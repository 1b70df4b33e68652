"""Intents beyond regular expressions: a small classifier over the text embedder (multilingual-e5).

Examples per intent live in `configs/intents/{ru,en}.yaml`, which a bank extends without code:
paraphrases, inflections ("I'm closing", "закрываю"), and - as important - calm examples of the
same topics under `none`, which keep calm calls quiet. At first use a softmax regression is fitted
on the examples of both languages (e5 is multilingual, so each language's examples help the other);
it takes a second on a CPU and is cached per process. The examples' vectors are also kept on disk
per embedder, so a new process (each audit worker) does not embed them again (about 4 s).
A turn fires an intent when the classifier gives it at least `min_probability`; the regular
expressions in hints.py stay as high-precision evidence beside it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from callsense.stages.text_emotion import sentences

Embed = Callable[[list[str]], np.ndarray]
NONE = "none"


@dataclass(frozen=True)
class IntentSet:
    """Examples per intent for one speaker role ("customer" or "operator"), both languages."""

    labels: tuple[str, ...]
    texts: tuple[str, ...]
    targets: tuple[int, ...]
    min_probability: float


def load_intents(directory: Path, role: str) -> IntentSet:
    labels: list[str] = [NONE]
    texts: list[str] = []
    targets: list[int] = []
    min_probability = 0.7
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        min_probability = float(data.get(f"min_probability_{role}", data.get("min_probability", min_probability)))
        for label, examples in (data.get(role) or {}).items():
            if label not in labels:
                labels.append(label)
            texts += [str(e) for e in examples]
            targets += [labels.index(label)] * len(examples)
    return IntentSet(tuple(labels), tuple(texts), tuple(targets), min_probability)


class IntentClassifier:
    """Softmax regression on mean-centred, normalised e5 embeddings."""

    def __init__(self, intents: IntentSet, embed: Embed, vectors: np.ndarray, l2: float = 1e-3, steps: int = 400) -> None:
        """`vectors`: the examples' embeddings by `embed` (`classifier_for` reads them from disk)."""
        self.labels, self.embed, self.min_probability = intents.labels, embed, intents.min_probability
        x = self._features(np.asarray(vectors, np.float64), fit=True)
        y = np.zeros((len(intents.targets), len(self.labels)))
        y[np.arange(len(intents.targets)), intents.targets] = 1.0
        # classes are balanced by weight: a long list of calm examples must not drown an intent
        weights = (y / np.maximum(y.sum(0), 1)).sum(1) * len(self.labels)
        self.w = np.zeros((x.shape[1], len(self.labels)))
        self.b = np.zeros(len(self.labels))
        for _ in range(steps):  # full-batch gradient descent: a few hundred examples, 384 features
            p = _softmax(x @ self.w + self.b)
            g = (p - y) * weights[:, None] / len(x)
            self.w -= 4.0 * (x.T @ g + l2 * self.w)
            self.b -= 4.0 * g.sum(0)

    def _features(self, x: np.ndarray, fit: bool = False) -> np.ndarray:
        if fit:
            self.mean = x.mean(0)
        x = x - self.mean  # e5 vectors share a large common direction; remove it
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9) * 8.0

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return _softmax(self._features(np.asarray(self.embed(texts), np.float64)) @ self.w + self.b)

    def read(self, text: str) -> Reading | None:
        """Every intent's probability for each sentence of a turn (of three words or more)."""
        said = [s for s in sentences(text) if len(s.split()) >= 3]
        if not said:  # "yes", "<unk>", a lone number: nothing to classify
            return None
        return Reading(self.labels, tuple(said), self.probabilities(said), self.min_probability)


@dataclass(frozen=True)
class Reading:
    """A turn as the classifier read it, sentence by sentence."""

    labels: tuple[str, ...]
    sentences: tuple[str, ...]
    probs: np.ndarray  # sentences x labels
    min_probability: float

    def strongest(self, labels: set[str]) -> tuple[str, float, str] | None:
        """Among `labels`, the likeliest intent of any sentence, its probability and that sentence (the
        span a hint quotes), or None below `min_probability`."""
        cols = [i for i, label in enumerate(self.labels) if label in labels]
        if not cols:
            return None
        sub = self.probs[:, cols]
        row, col = np.unravel_index(int(np.argmax(sub)), sub.shape)
        p = float(sub[row, col])
        return (self.labels[cols[col]], p, self.sentences[row]) if p >= self.min_probability else None

    def probability(self, label: str) -> float:
        """The label's probability in the turn's strongest sentence for it (0 if the label is unknown)."""
        return float(self.probs[:, self.labels.index(label)].max()) if label in self.labels else 0.0


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


_lock = threading.Lock()


_classifiers: dict[tuple[str, str, str], IntentClassifier] = {}


def classifier_for(directory: Path, role: str, embed: Embed) -> IntentClassifier:
    """One fitted classifier per examples folder and role in a process (the examples' hash is the key)."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.glob("*.yaml")))).hexdigest()
    key = (str(directory), role, digest)
    with _lock:
        if key not in _classifiers:
            intents = load_intents(directory, role)
            _classifiers[key] = IntentClassifier(intents, embed, _example_vectors(intents, embed, digest, role))
        return _classifiers[key]


def _example_vectors(intents: IntentSet, embed: Embed, digest: str, role: str) -> np.ndarray:
    """The examples' embeddings, read from the cache folder when this embedder made them before.
    Only the configured examples are stored there, never a call's words."""
    from callsense.models import cache_dir

    identity = getattr(embed, "identity", None)
    if identity is None:  # a bare function: no way to tell which model it runs
        return np.asarray(embed(list(intents.texts)))
    name = hashlib.sha256(f"{identity}|{digest}|{role}".encode()).hexdigest()[:32]
    path = cache_dir() / "intents" / f"{name}.npy"
    try:
        vectors = np.load(path)
        if vectors.shape[0] == len(intents.texts):
            return np.asarray(vectors)
    except (OSError, ValueError):
        pass  # absent or damaged: embed again
    vectors = np.asarray(embed(list(intents.texts)), np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, path)  # atomic: audit workers may write it at the same time
    except OSError:
        pass  # a read-only home: embed per process, as before
    return vectors
