"""Per-turn emotion: prosody against the speaker's own baseline, the words, fused with evidence.

The stage hears every channel's audio and measures its voice frame by frame as it arrives (the last
`KEEP_S` seconds per channel are kept); each final transcript turn is scored on the frames of its
own channel.
"""

from __future__ import annotations

import numpy as np

from callsense.config import EmotionSettings
from callsense.events import Emotion, TranscriptFinal
from callsense.stages.fusion import Fuser
from callsense.stages.prosody import SpeakerBaseline, SpeechEmotionModel, VoiceTrack
from callsense.stages.text_emotion import TextEmotion, embed_early

KEEP_S = 120  # per channel: voice measurements for the longest turn
VOICE_S = 8.0  # the voice of a longer turn is scored on its middle 8 s: the models were trained on
# clips of a few seconds, and 8 s already hold a speaker's pitch, loudness and pauses


class EmotionStage:
    """final transcript -> [Emotion] (none for an empty turn without usable voice)."""

    def __init__(
        self, settings: EmotionSettings, voice: SpeechEmotionModel, words: TextEmotion, channels: int, eager: bool = True
    ) -> None:
        """`eager`: the voice is measured as it arrives (live); else when a turn is scored (`VoiceTrack`)."""
        self.settings, self.voice, self.words = settings, voice, words
        self.tracks = [VoiceTrack(KEEP_S, eager=eager) for _ in range(channels)]
        self.baselines: dict[str, SpeakerBaseline] = {}
        self.fuser = Fuser(settings)

    def hear(self, audio: np.ndarray) -> None:
        """(channels, samples) of the call, as it arrives."""
        for ch, track in enumerate(self.tracks):
            track.add(audio[ch])

    def seek(self, sample: int) -> None:
        for track in self.tracks:
            track.seek(sample)

    def push(self, fin: TranscriptFinal) -> list[Emotion]:
        baseline = self.baselines.setdefault(fin.speaker, self.voice.new_baseline(self.settings.baseline_turns))
        start, end = fin.start, fin.end
        if end - start > VOICE_S:
            start = (start + end - VOICE_S) / 2
            end = start + VOICE_S
        # the words' pieces (mostly embedded in the pause already) are embedded on the e5 threads; the
        # voice was measured as it arrived, only its last frames are measured now
        embed_early(fin.text, self.words.settings)
        scored = self.voice.score_frames(self.tracks[fin.channel].window(start, end), baseline)
        voice = scored[0] if scored is not None else None
        words = self.words.score([fin.text])[0] if fin.text.strip() else None
        emo = self.fuser.fuse(fin.speaker, fin.role, fin.start, fin.end, fin.utterance_id, fin.text, words, voice)
        if voice is not None:
            emo.evidence["speech_rate_wps"] = round(len(fin.words) / max(fin.end - fin.start, 0.1), 2)
        if fin.role_confidence < 1.0:
            emo.evidence["role_guess"] = {"confidence": fin.role_confidence}
        return [emo]

    def flush(self) -> list[Emotion]:
        return []
