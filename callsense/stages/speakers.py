"""Who is speaking, without models: the echo gate for stereo calls, operator/customer roles, enrolled
voiceprints, the attribution of transcripts to speakers (`ChannelSpeakers` for stereo,
`MonoSpeakers` around the streaming diarizer for mono), and what both streaming diarizers (on the
call's thread, or in the diarizer process) share: their speakers and who talks in a stretch.

Kept apart from `diarization` (pyannote.audio and torch) so that stereo calls, which need no
diarization model, do not pay for importing them: about 5 s per process, per audit worker.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from callsense.events import TranscriptFinal, TranscriptPartial, Word
from callsense.models import cache_dir

if TYPE_CHECKING:
    from pyannote.core import Annotation


class Diarizer(Protocol):
    """What `MonoSpeakers` needs of a streaming diarizer: `diarization.StreamingDiarizer` on the call's
    thread, or `diarizer_process.RemoteDiarizer` in a process of its own."""

    @property
    def centroids(self) -> list[SpeakerCentroid]: ...

    def push(self, audio: np.ndarray) -> list[Any]: ...

    def seek(self, sample: int) -> None: ...

    def flush(self) -> list[Any]: ...

    def speaker_at(self, start: float, end: float) -> str | None: ...


# --- stereo: echo gate -----------------------------------------------------------------------


class ChannelGate:
    """Mutes 32 ms frames of a channel that hold only the other party: echo or cross-talk.

    Leak is a copy of the other channel attenuated by the line's echo path loss, which is the same
    all call long; the party's own speech over the other (over-talk) is far louder than that copy.
    Each channel learns its loss as the median level difference to the loudest other channel over
    the frames where that one speaks (most of that time this channel carries nothing but the leak,
    or digital silence), and a frame is muted when it is within `margin_db` of the leak, never
    when it is within `dominance_db` of the other. Until `LEARN_FRAMES` frames have been seen (about
    3 s of the other party) the rule is the fixed one: muted when the other is `dominance_db` louder.

    Frames lie on a fixed grid from the start of the call, whatever the chunk sizes (they vary with
    load), and each frame's decision uses the frames before it: the last incomplete frame waits for
    the next chunk (at most 32 ms), so the same call is gated the same way on every run and after a
    takeover by another worker."""

    FRAME = 512
    SPEAKING_DB = -45.0  # a frame level (dBFS) at which the other channel counts as speaking
    LEARN_FRAMES = 100
    BINS = 121  # level differences of 0-120 dB, 1 dB apart
    KEEP = 6000  # counts are halved past this: a loss that changes mid-call is learnt again

    def __init__(self, dominance_db: float = 10.0, margin_db: float = 6.0) -> None:
        self.dominance_db, self.margin_db = dominance_db, margin_db
        self._pending: np.ndarray | None = None
        self._seen: np.ndarray | None = None  # per channel: a histogram of level differences

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
        return json.dumps(
            {
                "pending": base64.b64encode(np.ascontiguousarray(rest, np.float32).tobytes()).decode(),
                "channels": rest.shape[0],
                "seen": None if self._seen is None else self._seen.tolist(),
            }
        )

    def restore(self, state: str) -> None:
        if state.startswith("{"):
            d = json.loads(state)
        else:  # a checkpoint from before the gate learnt: "<pending>:<channels>"
            data, channels = state.rsplit(":", 1)
            d = {"pending": data, "channels": int(channels), "seen": None}
        flat = np.frombuffer(base64.b64decode(d["pending"]), np.float32)
        self._pending = flat.reshape(d["channels"], -1).copy() if d["channels"] else None
        self._seen = None if d["seen"] is None else np.array(d["seen"], np.int64)

    def _gate(self, audio: np.ndarray, frame: int | None = None) -> np.ndarray:
        frame = frame or self.FRAME
        channels = audio.shape[0]
        if not audio.shape[1]:
            return audio
        if self._seen is None or self._seen.shape[0] != channels:
            self._seen = np.zeros((channels, self.BINS), np.int64)
        frames = audio.reshape(channels, -1, frame)
        level = 10 * np.log10(np.mean(frames**2, axis=2) + 1e-10)
        loudest_other = np.stack([np.delete(level, c, axis=0).max(axis=0) for c in range(channels)])
        gap = loudest_other - level
        mute = np.zeros_like(gap, dtype=bool)
        for i in range(gap.shape[1]):  # in order: each frame is judged on the frames before it
            for c in range(channels):
                mute[c, i] = gap[c, i] > self._threshold(c)
                if loudest_other[c, i] > self.SPEAKING_DB:
                    self._learn(c, gap[c, i])
        gated = audio.copy()
        gated.reshape(channels, -1, frame)[mute] = 0.0
        return gated

    def _threshold(self, channel: int) -> float:
        """How much louder the other channel must be for this channel's frame to be leak."""
        assert self._seen is not None
        seen = self._seen[channel]
        total = int(seen.sum())
        if total < self.LEARN_FRAMES:
            return self.dominance_db
        loss = float(np.searchsorted(np.cumsum(seen), (total + 1) // 2))  # the median difference, dB
        return max(self.dominance_db, loss - self.margin_db)

    def _learn(self, channel: int, gap: float) -> None:
        assert self._seen is not None
        self._seen[channel, int(np.clip(round(gap), 0, self.BINS - 1))] += 1
        if self._seen[channel].sum() > self.KEEP:
            self._seen[channel] //= 2


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


def voiceprint_path(operator_id: str) -> Path:
    """Where an operator's voiceprint lives (the id made safe as a file name)."""
    return voiceprint_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', operator_id)}.json"


def load_voiceprint(operator_id: str) -> np.ndarray | None:
    path = voiceprint_path(operator_id)
    if not path.exists():
        return None
    return np.asarray(json.loads(path.read_text())["vector"], np.float32)


# --- streaming diarizers' shared parts ----------------------------------------------------------


@dataclass
class SpeakerCentroid:
    """A call-wide speaker of a streaming diarizer: its label and running mean voiceprint."""

    label: str
    vector: np.ndarray
    count: int = 1


def speaker_in(annotation: Annotation, start: float, end: float) -> str | None:
    """The speaker who talks most within [start, end] of a diarizer's labelled turns."""
    from pyannote.core import Segment

    crop = annotation.crop(Segment(start, end))
    if not crop:
        return None
    return str(max(crop.labels(), key=lambda lbl: crop.label_duration(lbl)))


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

    def __init__(self, diarizer: Diarizer, roles: RoleAssigner) -> None:
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
            spk = (
                self._speaker(w.start, w.end)
                or (groups[-1][0] if groups else None)
                or self._speaker(fin.start, fin.end)
                or "SPEAKER_00"
            )
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
            part = fin.model_copy(
                update={
                    "speaker": spk,
                    "words": words,
                    "text": text,
                    "start": fin.start if whole or not words else words[0].start,
                    "end": fin.end if whole or not words else words[-1].end,
                    "utterance_id": fin.utterance_id if whole else f"{fin.utterance_id}.{i + 1}",
                }
            )
            self.roles.observe_text(spk, text)
            guess = self.roles.role_of(spk)
            part.role, part.role_confidence = guess.role, guess.confidence  # type: ignore[assignment]
            out.append(part)
        return out
