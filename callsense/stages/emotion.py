"""Per-turn emotion: prosody against the speaker's own baseline, the words, fused with evidence.

The stage hears every channel's audio (it keeps the last `AUDIO_KEEP_S` seconds per channel) and
scores each final transcript turn on the audio of its own channel.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from callsense.config import SAMPLE_RATE, EmotionSettings
from callsense.events import Emotion, TranscriptFinal
from callsense.stages.fusion import Fuser
from callsense.stages.prosody import SpeakerBaseline, SpeechEmotionModel
from callsense.stages.text_emotion import TextEmotion

_WORDS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="words")  # shared by every call of a process
AUDIO_KEEP_S = 120  # per channel, enough for the longest turn's prosody
VOICE_S = 8.0  # the voice of a longer turn is scored on its middle 8 s: its cost (pitch tracking) grows
# with length, and 8 s already hold a speaker's pitch, loudness and pauses (the models were trained on
# clips of a few seconds)


class ChannelAudio:
    """The last AUDIO_KEEP_S seconds of one channel, addressable by stream time."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self._start = 0  # absolute sample of the first kept block
        self._end = 0

    def add(self, audio: np.ndarray) -> None:
        self._blocks.append(audio)
        self._end += audio.size
        while self._blocks and self._end - self._start - self._blocks[0].size > AUDIO_KEEP_S * SAMPLE_RATE:
            self._start += self._blocks.popleft().size

    def seek(self, sample: int) -> None:
        self._blocks.clear()
        self._start = self._end = sample

    def slice(self, start: float, end: float) -> np.ndarray:
        if not self._blocks:
            return np.zeros(0, np.float32)
        data = np.concatenate(self._blocks)
        self._blocks = deque([data])
        a = int(max(start * SAMPLE_RATE - self._start, 0))
        b = int(max(end * SAMPLE_RATE - self._start, 0))
        return data[a:b]


class EmotionStage:
    """final transcript -> [Emotion] (none for an empty turn without usable voice)."""

    def __init__(self, settings: EmotionSettings, voice: SpeechEmotionModel, words: TextEmotion,
                 channels: int) -> None:
        self.settings, self.voice, self.words = settings, voice, words
        self.audio = [ChannelAudio() for _ in range(channels)]
        self.baselines: dict[str, SpeakerBaseline] = {}
        self.fuser = Fuser(settings)

    def hear(self, audio: np.ndarray) -> None:
        """(channels, samples) of the call, as it arrives."""
        for ch, keep in enumerate(self.audio):
            keep.add(audio[ch])

    def seek(self, sample: int) -> None:
        for keep in self.audio:
            keep.seek(sample)

    def push(self, fin: TranscriptFinal) -> list[Emotion]:
        channel = int(fin.speaker[2:]) if fin.speaker.startswith("ch") else 0  # stereo speakers are ch<N>
        baseline = self.baselines.setdefault(fin.speaker, self.voice.new_baseline(self.settings.baseline_turns))
        start, end = fin.start, fin.end
        if end - start > VOICE_S:
            start = (start + end - VOICE_S) / 2
            end = start + VOICE_S
        # the words (an e5 embedding) are scored on another core while this one tracks the pitch: both
        # release the GIL in numpy, so a turn costs the longer of the two, not their sum
        reading = _WORDS.submit(self.words.score, [fin.text]) if fin.text.strip() else None
        scored = self.voice.score_turn(self.audio[channel].slice(start, end), baseline)
        voice = scored[0] if scored is not None else None
        words = reading.result()[0] if reading is not None else None
        emo = self.fuser.fuse(fin.speaker, fin.role, fin.start, fin.end, fin.utterance_id, fin.text, words, voice)
        if voice is not None:
            emo.evidence["speech_rate_wps"] = round(len(fin.words) / max(fin.end - fin.start, 0.1), 2)
        if fin.role_confidence < 1.0:
            emo.evidence["role_guess"] = {"confidence": fin.role_confidence}
        return [emo]

    def flush(self) -> list[Emotion]:
        return []
