"""Prosody per turn (librosa) and the speech-emotion model trained on it.

Features are deliberately few and interpretable, so the evidence shown to an operator or auditor
means something: pitch level, range and slope (YIN, a fast tracker), loudness and its spread,
pause share, jitter- and shimmer-like perturbation, spectral tilt and centroid. Each speaker is
compared with their own running baseline within the call (z-scores), so a naturally loud or high
voice is not read as agitation; until a baseline exists the training population stands in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import librosa
import numpy as np

from callsense.config import SAMPLE_RATE
from callsense.models import callsense_weight

HOP = 160  # 10 ms
FEATURES = [
    "f0_median_st", "f0_range_st", "f0_slope_st_s", "loudness_db", "loudness_std_db", "pause_share",
    "jitter", "shimmer", "spectral_tilt_db", "spectral_centroid_hz", "voiced_share",
]
EXPLAIN = {
    "f0_median_st": "pitch", "f0_range_st": "pitch range", "f0_slope_st_s": "pitch slope",
    "loudness_db": "loudness", "loudness_std_db": "loudness variation", "pause_share": "pauses",
    "jitter": "pitch instability", "shimmer": "loudness instability", "spectral_tilt_db": "voice tension",
    "spectral_centroid_hz": "voice brightness", "voiced_share": "voicing",
}


def features(audio: np.ndarray) -> dict[str, float] | None:
    """Prosodic features of one turn of mono 16 kHz speech; None when there is too little voice."""
    audio = np.asarray(audio, np.float32)
    if audio.size < 0.3 * SAMPLE_RATE:
        return None
    rms = librosa.feature.rms(y=audio, frame_length=400, hop_length=HOP)[0]
    db = 20 * np.log10(rms + 1e-6)
    active = db > (db.max() - 35)
    if active.sum() < 10:
        return None
    f0 = librosa.yin(audio, fmin=60, fmax=450, sr=SAMPLE_RATE, frame_length=1024, hop_length=HOP)
    n = min(len(f0), len(active))
    f0, db_n, active_n = f0[:n], db[:n], active[:n]
    voiced = active_n & (f0 > 62) & (f0 < 440)
    if voiced.sum() < 10:
        return None
    st = 12 * np.log2(f0[voiced] / 100.0)
    t = np.flatnonzero(voiced) * HOP / SAMPLE_RATE
    periods = 1.0 / f0[voiced]
    amp = 10 ** (db_n[voiced] / 20)
    spec = np.abs(librosa.stft(audio, n_fft=512, hop_length=HOP))[:, :n][:, voiced] ** 2
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=512)
    low = spec[(freqs >= 50) & (freqs < 1000)].sum(axis=0)
    high = spec[(freqs >= 1000) & (freqs < 4000)].sum(axis=0)
    centroid = librosa.feature.spectral_centroid(S=np.sqrt(spec), freq=freqs)[0]
    return {
        "f0_median_st": float(np.median(st)),
        "f0_range_st": float(np.percentile(st, 90) - np.percentile(st, 10)),
        "f0_slope_st_s": float(np.polyfit(t, st, 1)[0]) if np.ptp(t) > 0.2 else 0.0,
        "loudness_db": float(np.mean(db_n[active_n])),
        "loudness_std_db": float(np.std(db_n[active_n])),
        "pause_share": float(1 - active_n.mean()),
        "jitter": float(np.mean(np.abs(np.diff(periods))) / np.mean(periods)),
        "shimmer": float(np.mean(np.abs(np.diff(amp))) / (np.mean(amp) + 1e-9)),
        "spectral_tilt_db": float(np.median(10 * np.log10((high + 1e-10) / (low + 1e-10)))),
        "spectral_centroid_hz": float(np.median(centroid)),
        "voiced_share": float(voiced.mean()),
    }


def vector(feats: dict[str, float]) -> np.ndarray:
    return np.array([feats[k] for k in FEATURES], np.float64)


def speaker_z(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each speaker's feature rows against their own mean and spread, as the in-call baseline does."""
    z = np.zeros_like(x)
    for s in np.unique(speakers):
        m = speakers == s
        z[m] = (x[m] - x[m].mean(0)) / (x[m].std(0) + 1e-6)
    return z


@dataclass
class SpeakerBaseline:
    """Running mean and spread of one speaker's raw features within a call (Welford)."""

    prior_mean: np.ndarray
    prior_std: np.ndarray
    min_turns: int = 3
    n: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES)))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES)))

    def z(self, x: np.ndarray) -> np.ndarray:
        """Deviation of a turn from this speaker's usual voice (population prior while new)."""
        if self.n < self.min_turns:
            w = self.n / self.min_turns  # blend from the population towards the speaker
            mean = (1 - w) * self.prior_mean + w * (self.mean if self.n else self.prior_mean)
            return (x - mean) / self.prior_std
        std = np.sqrt(self.m2 / max(self.n - 1, 1))
        std = np.maximum(std, 0.5 * self.prior_std)  # a few similar turns must not make tiny spreads
        return (x - self.mean) / std

    def update(self, x: np.ndarray) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (x - self.mean)


@dataclass
class SpeechScores:
    arousal: float  # -1 calm .. +1 agitated
    emotion: dict[str, float]
    z: dict[str, float]

    def evidence(self, top: int = 3, min_abs: float = 1.0) -> list[str]:
        """The strongest deviations from the speaker's baseline, in words."""
        ranked = sorted(self.z.items(), key=lambda kv: -abs(kv[1]))
        return [f"{EXPLAIN[k]} {'up' if v > 0 else 'down'} {abs(v):.1f} sd" for k, v in ranked[:top]
                if abs(v) >= min_abs]


class SpeechEmotionModel:
    """Logistic heads on speaker-normalised prosody: arousal (high/low) and categorical emotion."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = weights
        self.emotions = [str(x) for x in weights["emotions"]]

    @classmethod
    def load(cls) -> SpeechEmotionModel:
        with np.load(callsense_weight("speech_emotion.npz")) as data:
            return cls({k: data[k] for k in data.files})

    def new_baseline(self, min_turns: int = 3) -> SpeakerBaseline:
        return SpeakerBaseline(self.w["prior_mean"].astype(np.float64), self.w["prior_std"].astype(np.float64),
                               min_turns)

    def predict_z(self, z: np.ndarray) -> SpeechScores:
        z = np.clip(z, -5, 5)
        a_logit = float(z @ self.w["arousal_W"][0] + self.w["arousal_b"][0])
        logits = self.w["emotion_W"] @ z + self.w["emotion_b"]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return SpeechScores(
            arousal=float(np.tanh(a_logit / 2)),
            emotion=dict(zip(self.emotions, map(float, p), strict=True)),
            z={k: round(float(v), 2) for k, v in zip(FEATURES, z, strict=True)},
        )

    def score_turn(self, audio: np.ndarray, baseline: SpeakerBaseline) -> tuple[SpeechScores, dict] | None:
        feats = features(audio)
        if feats is None:
            return None
        x = vector(feats)
        scores = self.predict_z(baseline.z(x))
        baseline.update(x)
        return scores, feats
