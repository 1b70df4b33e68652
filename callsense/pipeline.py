"""The call pipeline: wires the stages for one call and turns audio chunks into events.

    chunks -> echo gate -> per-channel VAD + streaming ASR -> finals
           (mono: streaming diarization labels each final's words by speaker)
    finals -> prosody (speaker baseline) + text emotion -> fusion -> emotion
    finals/emotion/overlaps -> hints

Every path (live server, `callsense stream`, `transcribe`, `analyze`, `audit`) drives this same
class, chunk by chunk. `Models` holds the loaded weights so many calls share one copy.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callsense.config import Settings
from callsense.events import (
    CallEnded,
    CallStarted,
    Emotion,
    Error,
    Event,
    Hint,
    Metrics,
    Overlap,
    Sequencer,
    TranscriptFinal,
    TranscriptPartial,
    Word,
)
from callsense.fusion import Fuser
from callsense.hints import HintEngine
from callsense.sources import AudioChunk

SR = 16000
AUDIO_KEEP_S = 120  # per channel, enough for the longest turn's prosody


@dataclass
class Models:
    """Loaded models, shared by every call in a process (loaded lazily, once)."""

    settings: Settings
    _cache: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def _load(self, name: str) -> Any:
        s = self.settings
        if name == "whisper":
            from callsense.models import load_whisper

            return load_whisper(s.models)
        if name == "decode_gate":  # one per process: every call's Whisper decodes queue here
            from callsense.transcription import DecodeGate

            return DecodeGate(s.models.whisper_workers)
        if name == "speech_emotion":
            from callsense.prosody import SpeechEmotionModel

            return SpeechEmotionModel.load()
        if name == "text_emotion":
            from callsense.text_emotion import TextEmotion

            return TextEmotion.load(s.models)
        if name == "segmentation":
            from callsense.diarization import load_segmentation

            return load_segmentation(s.models)
        if name == "embedding":
            from callsense.diarization import CamPlusPlus

            return CamPlusPlus.from_bundle()
        raise KeyError(name)

    def warm(self, mono: bool = False) -> None:
        """Load the models and run each once, so the first call does not pay for initialisation."""
        for name in ("whisper", "speech_emotion", "text_emotion") + (("segmentation", "embedding") if mono else ()):
            self.get(name)
        if "warm" not in self._cache:
            tone = (0.1 * np.sin(np.arange(SR) * 2 * np.pi * 220 / SR)).astype(np.float32)
            from concurrent.futures import ThreadPoolExecutor

            whisper = self.get("whisper")
            with ThreadPoolExecutor(self.settings.models.whisper_workers) as pool:  # warm every worker replica
                list(pool.map(lambda _: list(whisper.transcribe(tone, language="en", beam_size=1)[0]),
                              range(self.settings.models.whisper_workers)))
            self.get("text_emotion").score(["hello"])
            from callsense.prosody import features

            features(tone)  # librosa's YIN is JIT-compiled on first use (about a second)
            self._cache["warm"] = True
            # a throwaway call: the stage modules' imports (pyannote's take seconds) and sessions
            CallPipeline(self.settings, self, ["operator", "customer"], source="warm-up").run(
                [AudioChunk(np.stack([tone, tone]), 0.0)])


def roles_for(channels: int, settings: Settings) -> list[str]:
    """Roles of a recording's channels: one mixed channel is diarized; stereo follows `settings.channels`."""
    if channels == 1:
        return ["unknown"]
    roles = list(settings.channels)[:channels]
    return roles + ["unknown"] * (channels - len(roles))


class ChannelAudio:
    """The last AUDIO_KEEP_S seconds of one channel, addressable by stream time."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self._start = 0  # absolute sample of the first kept block
        self._end = 0

    def add(self, audio: np.ndarray) -> None:
        self._blocks.append(audio)
        self._end += audio.size
        while self._blocks and self._end - self._start - self._blocks[0].size > AUDIO_KEEP_S * SR:
            self._start += self._blocks.popleft().size

    def slice(self, start: float, end: float) -> np.ndarray:
        if not self._blocks:
            return np.zeros(0, np.float32)
        data = np.concatenate(self._blocks)
        self._blocks = deque([data])
        a = int(max(start * SR - self._start, 0))
        b = int(max(end * SR - self._start, 0))
        return data[a:b]


class CallPipeline:
    def __init__(self, settings: Settings, models: Models, roles: list[str], call_id: str | None = None,
                 operator_id: str | None = None, language: str | None = None, source: str = "file",
                 partials: bool = True) -> None:
        from callsense.diarization import ChannelGate
        from callsense.transcription import StreamingTranscriber, WhisperDecoder

        self.settings, self.models = settings, models
        self.call_id = call_id or uuid.uuid4().hex[:12]
        self.roles = roles
        self.mono = len(roles) == 1 and roles[0] == "unknown"
        self.seq = Sequencer(self.call_id)
        self.language = language or settings.asr.language
        self.operator_id = operator_id
        self.source = source
        self.partials = partials
        decoder = WhisperDecoder(models.get("whisper"), settings.asr, gate=models.get("decode_gate"))
        self.transcribers = [
            StreamingTranscriber(decoder, settings.asr, speaker=self._speaker(i), role=r,  # type: ignore[arg-type]
                                 language=self.language)
            for i, r in enumerate(roles)
        ]
        for tr in self.transcribers:
            tr.skip_partials = not partials
        self.audio = [ChannelAudio() for _ in roles]
        self.gate = ChannelGate(settings.diarization.echo_dominance_db)
        self.fuser = Fuser(settings.emotion)
        self.hints = HintEngine(settings.hints, language=(self.language or "en"), embed=self._embed)
        self.baselines: dict[str, Any] = {}
        self.diarizer = self._make_diarizer() if self.mono else None
        self.roles_guess = None
        if self.mono:
            from callsense.diarization import RoleAssigner, load_voiceprint

            self.roles_guess = RoleAssigner(voiceprint=load_voiceprint(operator_id) if operator_id else None)
        self.finals: list[TranscriptFinal] = []
        self.events: list[Event] = []
        self.samples = 0
        self.started_wall = time.monotonic()
        self.stage_s: dict[str, float] = {"asr": 0.0, "diarization": 0.0, "emotion": 0.0, "hints": 0.0}
        self.shedding = False
        self._last_metrics_t = 0.0
        self._ended = False

    # -- public API --

    def start(self) -> list[Event]:
        return self._emit([CallStarted(sample_rate=SR, channels=list(self.roles), source=self.source,  # type: ignore[arg-type]
                                       operator_id=self.operator_id, language=self.language)])

    def push(self, chunk: AudioChunk, arrived: float | None = None) -> list[Event]:
        """Process one chunk; `arrived` is the monotonic time it was received (for lag)."""
        audio = chunk.audio
        if audio.shape[0] != len(self.roles):
            return self._emit([Error(code="channels", message=f"chunk has {audio.shape[0]} channels, call has "
                                     f"{len(self.roles)}")])
        self.samples += audio.shape[1]
        gated = self.gate(audio)
        out: list[Event] = []
        if self.diarizer is not None:
            t0 = time.perf_counter()
            self.diarizer.push(audio[0])
            self.stage_s["diarization"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for ch, tr in enumerate(self.transcribers):
            self.audio[ch].add(audio[ch])
            for ev in tr.push(gated[ch]):
                out.extend(self._on_transcript(ev))
        self.stage_s["asr"] += time.perf_counter() - t0
        out.extend(self._metrics(arrived))
        return self._emit(out)

    def finish(self, reason: str = "hangup") -> list[Event]:
        if self._ended:
            return []
        self._ended = True
        out: list[Event] = []
        if self.diarizer is not None:
            self.diarizer.flush()
        for tr in self.transcribers:
            for ev in tr.flush():
                out.extend(self._on_transcript(ev))
        out.append(CallEnded(duration_s=round(self.samples / SR, 3), reason=reason))
        return self._emit(out)

    def run(self, chunks: Iterable[AudioChunk], on_event: Callable[[Event], None] | None = None) -> list[Event]:
        """Whole source through the pipeline (batch paths use this; same code as live)."""
        for ev in self.start():
            on_event and on_event(ev)
        for chunk in chunks:
            for ev in self.push(chunk, time.monotonic()):
                on_event and on_event(ev)
        for ev in self.finish():
            on_event and on_event(ev)
        return self.events

    @property
    def stream_time(self) -> float:
        return self.samples / SR

    # -- stages --

    def _speaker(self, channel: int) -> str:
        return "S" if self.mono else f"ch{channel}"

    def _on_transcript(self, ev: TranscriptPartial | TranscriptFinal) -> list[Event]:
        if isinstance(ev, TranscriptPartial):
            if self.mono:
                ev.speaker = self._mono_speaker(ev.start, ev.end) or ev.speaker
                ev.role = self._mono_role(ev.speaker)
            return [ev]
        finals = self._split_by_speaker(ev) if self.mono else [ev]
        out: list[Event] = []
        for fin in finals:
            self.finals.append(fin)
            out.append(fin)
            out.extend(self._overlaps(fin))
            emo = self._emotion(fin)
            if emo is not None:
                out.append(emo)
            t0 = time.perf_counter()
            hints: list[Hint] = self.hints.on_final(fin)
            if emo is not None:
                hints += self.hints.on_emotion(emo)
            self.stage_s["hints"] += time.perf_counter() - t0
            out.extend(hints)
        return out

    def _emotion(self, fin: TranscriptFinal) -> Emotion | None:
        t0 = time.perf_counter()
        ch = 0 if self.mono else int(fin.speaker[2:])  # stereo speakers are named ch<N>
        voice = None
        model = self.models.get("speech_emotion")
        baseline = self.baselines.setdefault(fin.speaker, model.new_baseline(self.settings.emotion.baseline_turns))
        scored = model.score_turn(self.audio[ch].slice(fin.start, fin.end), baseline)
        if scored is not None:
            voice = scored[0]
        words = self.models.get("text_emotion").score([fin.text])[0] if fin.text.strip() else None
        emo = self.fuser.fuse(fin.speaker, fin.role, fin.start, fin.end, fin.utterance_id, fin.text, words, voice)
        if scored is not None:
            rate = len(fin.words) / max(fin.end - fin.start, 0.1)
            emo.evidence["speech_rate_wps"] = round(rate, 2)
        if fin.role_confidence < 1.0:
            emo.evidence["role_guess"] = {"confidence": fin.role_confidence}
        self.stage_s["emotion"] += time.perf_counter() - t0
        emo.evidence["scoring_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return emo

    def _overlaps(self, fin: TranscriptFinal) -> list[Overlap]:
        out = []
        for other in reversed(self.finals[-8:-1]):
            if other.speaker == fin.speaker:
                continue
            a, b = max(fin.start, other.start), min(fin.end, other.end)
            if b - a >= 0.3:
                later, earlier = (fin, other) if fin.start > other.start else (other, fin)
                out.append(Overlap(start=round(a, 2), end=round(b, 2), interrupter=later.speaker,
                                   interrupted=earlier.speaker))
        for ov in out:
            self.hints.on_overlap(ov)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        from callsense.text_emotion import embed_texts

        return embed_texts(texts, self.settings.models)

    # -- mono: diarization and roles --

    def _make_diarizer(self) -> Any:
        from callsense.diarization import StreamingDiarizer

        return StreamingDiarizer(self.settings.models, self.settings.diarization,
                                 segmentation=self.models.get("segmentation"), embedding=self.models.get("embedding"))

    def _mono_speaker(self, start: float, end: float) -> str | None:
        return self.diarizer.speaker_at(start, end) if self.diarizer else None

    def _mono_role(self, speaker: str) -> str:
        assert self.roles_guess is not None
        return self.roles_guess.role_of(speaker).role

    def _split_by_speaker(self, fin: TranscriptFinal) -> list[TranscriptFinal]:
        """Assign each word to the diarized speaker talking at its time; split where it changes."""
        groups: list[tuple[str, list[Word]]] = []
        for w in fin.words or []:
            spk = self._mono_speaker(w.start, w.end) or (groups[-1][0] if groups else None) \
                or self._mono_speaker(fin.start, fin.end) or "SPEAKER_00"
            if groups and groups[-1][0] == spk:
                groups[-1][1].append(w)
            else:
                groups.append((spk, [w]))
        if not groups:
            groups = [(self._mono_speaker(fin.start, fin.end) or "SPEAKER_00", [])]
        out = []
        for i, (spk, words) in enumerate(groups):
            text = " ".join(w.word for w in words) if len(groups) > 1 else fin.text
            part = fin.model_copy(update={
                "speaker": spk, "words": words, "text": text,
                "start": words[0].start if words and len(groups) > 1 else fin.start,
                "end": words[-1].end if words and len(groups) > 1 else fin.end,
                "utterance_id": fin.utterance_id if len(groups) == 1 else f"{fin.utterance_id}.{i + 1}",
            })
            assert self.roles_guess is not None
            self.roles_guess.observe_text(spk, text)
            guess = self.roles_guess.role_of(spk)
            part.role, part.role_confidence = guess.role, guess.confidence  # type: ignore[assignment]
            out.append(part)
        return out

    # -- lag and load shedding --

    def _metrics(self, arrived: float | None) -> list[Event]:
        if arrived is None or self.stream_time - self._last_metrics_t < 1.0:
            return []
        self._last_metrics_t = self.stream_time
        lag = time.monotonic() - arrived
        shed_at = self.settings.asr.shed_lag_s
        was = self.shedding
        # shed partials while behind; resume once lag is back under half the threshold
        self.shedding = lag > shed_at or (was and lag > shed_at / 2)
        for tr in self.transcribers:
            tr.skip_partials = self.shedding or not self.partials
        wall = time.monotonic() - self.started_wall
        return [Metrics(
            lag_s=round(max(lag, 0.0), 3), rtf=round(sum(self.stage_s.values()) / max(self.stream_time, 1e-6), 3),
            shedding=self.shedding, optional_decodes_skipped=self.models.get("decode_gate").skipped,
            shed_reason=f"lag {lag:.1f} s over {shed_at:.1f} s: partial transcripts paused" if self.shedding else None,
            stage_ms={k: round(v * 1000, 1) for k, v in self.stage_s.items()} | {"wall_ms": round(wall * 1000)},
        )]

    def _emit(self, events: list[Event]) -> list[Event]:
        for ev in events:
            self.seq.stamp(ev)
            ev.t = round(self.stream_time, 3)
        self.events.extend(events)
        return events
