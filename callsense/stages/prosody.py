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
    "f0_median_st",
    "f0_range_st",
    "f0_slope_st_s",
    "loudness_db",
    "loudness_std_db",
    "pause_share",
    "jitter",
    "shimmer",
    "spectral_tilt_db",
    "spectral_centroid_hz",
    "voiced_share",
]
EXPLAIN = {
    "f0_median_st": "pitch",
    "f0_range_st": "pitch range",
    "f0_slope_st_s": "pitch slope",
    "loudness_db": "loudness",
    "loudness_std_db": "loudness variation",
    "pause_share": "pauses",
    "jitter": "pitch instability",
    "shimmer": "loudness instability",
    "spectral_tilt_db": "voice tension",
    "spectral_centroid_hz": "voice brightness",
    "voiced_share": "voicing",
}


RMS_N, YIN_N, FFT_N = 400, 1024, 512  # analysis frames of loudness, pitch and spectrum (samples)
HALF = YIN_N // 2  # audio every measure needs either side of a frame's centre
MEASURES = 5  # per frame: loudness dB, f0, low-band power, high-band power, spectral centroid


def measure(seg: np.ndarray, n: int) -> np.ndarray:
    """(n, MEASURES) for the frames centred on samples HALF + j * HOP of `seg`, which holds
    (n - 1) * HOP + 2 * HALF samples. Each frame depends only on its own samples, so frames measured
    chunk by chunk as a call arrives equal those of the whole recording."""
    span = (n - 1) * HOP

    def around(width: int) -> np.ndarray:
        return seg[HALF - width // 2 : HALF - width // 2 + span + width]

    rms = librosa.feature.rms(y=around(RMS_N), frame_length=RMS_N, hop_length=HOP, center=False)[0]
    f0 = librosa.yin(around(YIN_N), fmin=60, fmax=450, sr=SAMPLE_RATE, frame_length=YIN_N, hop_length=HOP, center=False)
    spec = np.abs(librosa.stft(around(FFT_N), n_fft=FFT_N, hop_length=HOP, center=False)) ** 2
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=FFT_N)
    low = spec[(freqs >= 50) & (freqs < 1000)].sum(axis=0)
    high = spec[(freqs >= 1000) & (freqs < 4000)].sum(axis=0)
    centroid = librosa.feature.spectral_centroid(S=np.sqrt(spec), freq=freqs)[0]
    return np.stack([20 * np.log10(rms + 1e-6), f0, low, high, centroid], axis=1)[:n]


def features(audio: np.ndarray) -> dict[str, float] | None:
    """Prosodic features of one turn of mono 16 kHz speech; None when there is too little voice."""
    audio = np.asarray(audio, np.float32)
    if audio.size < 0.3 * SAMPLE_RATE:
        return None
    return summarise(measure(np.pad(audio, HALF), 1 + audio.size // HOP))


def summarise(frames: np.ndarray) -> dict[str, float] | None:
    """A turn's features from its frames' measurements (`measure`); None when too little is voiced."""
    if len(frames) < 0.3 * SAMPLE_RATE / HOP:
        return None
    db, f0, low_all, high_all, centroid_all = frames.T
    active = db > (db.max() - 35)
    voiced = active & (f0 > 62) & (f0 < 440)
    if active.sum() < 10 or voiced.sum() < 10:
        return None
    st = 12 * np.log2(f0[voiced] / 100.0)
    t = np.flatnonzero(voiced) * HOP / SAMPLE_RATE
    periods = 1.0 / f0[voiced]
    amp = 10 ** (db[voiced] / 20)
    low, high = low_all[voiced], high_all[voiced]
    return {
        "f0_median_st": float(np.median(st)),
        "f0_range_st": float(np.percentile(st, 90) - np.percentile(st, 10)),
        "f0_slope_st_s": float(np.polyfit(t, st, 1)[0]) if np.ptp(t) > 0.2 else 0.0,
        "loudness_db": float(np.mean(db[active])),
        "loudness_std_db": float(np.std(db[active])),
        "pause_share": float(1 - active.mean()),
        "jitter": float(np.mean(np.abs(np.diff(periods))) / np.mean(periods)),
        "shimmer": float(np.mean(np.abs(np.diff(amp))) / (np.mean(amp) + 1e-9)),
        "spectral_tilt_db": float(np.median(10 * np.log10((high + 1e-10) / (low + 1e-10)))),
        "spectral_centroid_hz": float(np.median(centroid_all[voiced])),
        "voiced_share": float(voiced.mean()),
        "voiced_s": float(voiced.sum() * HOP / SAMPLE_RATE),  # how much voice the rest was measured on
    }


class VoiceTrack:
    """One channel's frame measurements, taken as its audio arrives (every `STEP_S`), the last
    `keep_s` seconds kept: a turn's voice is summarised from frames already measured when its final
    comes, instead of tracking the pitch of the whole turn then (about 35 ms for 8 s).

    `eager=False` (recordings, where nobody waits for a turn's emotion): the audio is kept instead
    and only the frames a turn is scored on are measured, when it is scored - the same frames, for
    a fraction of the work (a call's turns, not both channels' every second)."""

    STEP_S = 0.5

    def __init__(self, keep_s: float, eager: bool = True) -> None:
        self.keep, self.eager = int(keep_s * SAMPLE_RATE / HOP), eager
        self.seek(0)

    def seek(self, sample: int) -> None:
        """Start (again) at `sample` of the stream; nothing before it is heard."""
        self._audio = np.zeros(0, np.float32)
        self._audio_at = sample  # stream sample of _audio[0]
        self._frames = np.zeros((0, MEASURES))
        # frame index of _frames[0], and the next to measure (not eager: the first whose audio is kept)
        self._first = self._next = -(-sample // HOP)

    @property
    def _heard(self) -> int:
        return self._audio_at + self._audio.size

    def add(self, audio: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, np.asarray(audio, np.float32)])
        if not self.eager:  # the last keep_s seconds, measured when a turn asks
            cut = self._audio.size - self.keep * HOP - HALF
            if cut > 0:
                self._audio, self._audio_at = self._audio[cut:], self._audio_at + cut
                self._next = max(self._next, -(-(self._audio_at + HALF) // HOP))
        elif (self._heard - HALF) // HOP - self._next >= self.STEP_S * SAMPLE_RATE / HOP:
            self._measure_up_to((self._heard - HALF) // HOP)

    def window(self, start: float, end: float) -> np.ndarray:
        """Measurements of the frames centred in [start, end) seconds (the last ones measured now,
        zero-padded where the stream has not gone on that far yet)."""
        a, b = int(np.ceil(start * SAMPLE_RATE / HOP)), int(np.ceil(end * SAMPLE_RATE / HOP))
        if not self.eager:
            return self._take(max(a, self._next), max(b - max(a, self._next), 0))
        self._measure_up_to((self._heard - HALF) // HOP)
        have = self._frames[max(a - self._first, 0) : max(b - self._first, 0)]
        rest = max(b, self._next) - max(a, self._next)
        return np.vstack([have, self._take(max(a, self._next), rest)]) if rest > 0 else have

    def _measure_up_to(self, frame: int) -> None:
        if frame <= self._next:
            return
        self._frames = np.vstack([self._frames, self._take(self._next, frame - self._next)])[-self.keep :]
        self._next = frame
        self._first = frame - len(self._frames)
        cut = self._next * HOP - HALF - self._audio_at  # audio no frame still to measure needs
        if cut > 0:
            self._audio, self._audio_at = self._audio[cut:], self._audio_at + cut

    def _take(self, first: int, n: int) -> np.ndarray:
        """Measure n frames from frame `first` on (silence where the stream has no audio)."""
        if n <= 0:
            return np.zeros((0, MEASURES))
        a = first * HOP - HALF
        b = a + (n - 1) * HOP + 2 * HALF
        seg = np.zeros(b - a, np.float32)
        lo, hi = max(a, self._audio_at), min(b, self._heard)
        if hi > lo:
            seg[lo - a : hi - a] = self._audio[lo - self._audio_at : hi - self._audio_at]
        return measure(seg, n)


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
    voiced_s: float = 0.0

    def evidence(self, top: int = 3, min_abs: float = 1.0) -> list[str]:
        """The strongest deviations from the speaker's baseline, in words."""
        ranked = sorted(self.z.items(), key=lambda kv: -abs(kv[1]))
        return [f"{EXPLAIN[k]} {'up' if v > 0 else 'down'} {abs(v):.1f} sd" for k, v in ranked[:top] if abs(v) >= min_abs]


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
        return SpeakerBaseline(self.w["prior_mean"].astype(np.float64), self.w["prior_std"].astype(np.float64), min_turns)

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
        return self.score_features(features(audio), baseline)

    def score_frames(self, frames: np.ndarray, baseline: SpeakerBaseline) -> tuple[SpeechScores, dict] | None:
        """A turn from its frames' measurements (`VoiceTrack.window`)."""
        return self.score_features(summarise(frames), baseline)

    def score_features(self, feats: dict[str, float] | None, baseline: SpeakerBaseline) -> tuple[SpeechScores, dict] | None:
        if feats is None:
            return None
        x = vector(feats)
        scores = self.predict_z(baseline.z(x))
        scores.voiced_s = round(feats["voiced_s"], 2)
        baseline.update(x)
        return scores, feats
