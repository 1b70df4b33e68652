"""Streaming speech recognition with faster-whisper, one `StreamingTranscriber` per speaker stream.

Policy: Silero VAD cuts the stream into utterances. While a person speaks, the utterance so far is
re-decoded every `partial_interval_s` and the words two consecutive hypotheses agree on are the
stable prefix (LocalAgreement-2). When the VAD hears the end of the utterance (or it grows past
`max_utterance_s`, cut at the last agreed word), the whole utterance is decoded once more with word
timestamps and emitted as final. Finals are therefore decoded exactly as offline Whisper would
decode that utterance, which keeps streaming WER at the offline level.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callsense.config import AsrSettings
from callsense.events import Role, TranscriptFinal, TranscriptPartial, Word
from callsense.vad import Endpointer, SileroVAD

SR = 16000
# Phrases Whisper is known to invent on silence, music and noise (subtitle credits and sign-offs).
HALLUCINATIONS = re.compile(
    r"(продолжение следует|субтитры (сделал|создавал|подготовил)|редактор субтитров|спасибо за просмотр|"
    r"подписывайтесь на канал|thank(s| you) for watching|please subscribe|subtitles by|amara\.org|"
    r"www\.|\.com\b)",
    re.IGNORECASE,
)


@dataclass
class Hypothesis:
    text: str
    words: list[Word]
    language: str | None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass
class Utterance:
    start_sample: int
    audio: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    last_partial_at: int = 0
    previous_words: list[str] = field(default_factory=list)
    stable_words: list[Word] = field(default_factory=list)

    def add(self, audio: np.ndarray) -> None:
        self.audio.append(audio)
        self.samples += audio.size

    def array(self) -> np.ndarray:
        if len(self.audio) > 1:
            self.audio = [np.concatenate(self.audio)]
        return self.audio[0] if self.audio else np.zeros(0, np.float32)


class WhisperDecoder:
    """Thin wrapper over a faster-whisper model with the hallucination guards always on."""

    def __init__(self, model: Any, settings: AsrSettings) -> None:
        self.model, self.settings = model, settings

    def detect_language(self, audio: np.ndarray, allowed: Sequence[str]) -> tuple[str, float]:
        _, _, probs = self.model.detect_language(audio)
        ranked = [(lang, p) for lang, p in probs if not allowed or lang in allowed]
        lang, p = max(ranked, key=lambda lp: lp[1])
        total = sum(p for _, p in ranked) or 1.0
        return lang, p / total

    def decode(self, audio: np.ndarray, language: str | None, words: bool, offset: float) -> Hypothesis:
        """`words=True` is a final: word timestamps and a temperature fallback for failed decodes.
        Partials (`words=False`) decode once, greedily: each costs a full encoder pass on a CPU."""
        s = self.settings
        segments, info = self.model.transcribe(
            audio, language=language, beam_size=s.beam_size, word_timestamps=words,
            vad_filter=False, condition_on_previous_text=False, without_timestamps=not words,
            no_speech_threshold=s.no_speech_threshold, log_prob_threshold=s.log_prob_threshold,
            compression_ratio_threshold=s.compression_ratio_threshold,
            temperature=[0.0, 0.4] if words else [0.0],
        )
        kept, out_words, logprobs, nsp = [], [], [], []
        for seg in segments:
            if self._hallucinated(seg):
                continue
            kept.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
            nsp.append(seg.no_speech_prob)
            for w in seg.words or []:
                out_words.append(Word(start=round(w.start + offset, 3), end=round(w.end + offset, 3),
                                      word=w.word.strip(), probability=round(w.probability, 3)))
        return Hypothesis(" ".join(t for t in kept if t), out_words, info.language,
                          float(np.mean(logprobs)) if logprobs else None, float(np.max(nsp)) if nsp else None)

    def _hallucinated(self, seg: Any) -> bool:
        s = self.settings
        if seg.no_speech_prob > s.no_speech_threshold and seg.avg_logprob < s.log_prob_threshold:
            return True
        if seg.compression_ratio > s.compression_ratio_threshold:
            return True
        return bool(HALLUCINATIONS.search(seg.text))


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """Number of leading words two hypotheses agree on (case and punctuation ignored)."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if _norm(a) != _norm(b):
            break
        n += 1
    return n


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


class StreamingTranscriber:
    """Feeds one speaker stream; `push` returns partial and final transcript events as they are ready."""

    def __init__(self, decoder: WhisperDecoder, settings: AsrSettings, speaker: str, role: Role = "unknown",
                 language: str | None = None, vad: SileroVAD | None = None) -> None:
        self.decoder, self.settings = decoder, settings
        self.speaker, self.role = speaker, role
        self.language = language or settings.language
        self._language_votes: list[tuple[str, float]] = []
        self.vad = vad or SileroVAD()
        self.endpointer = Endpointer(settings.vad_threshold, settings.min_silence_s, pad_s=settings.speech_pad_s)
        self._history = np.zeros(0, np.float32)  # recent audio, for the padded utterance start
        self._samples = 0  # samples received
        self._utt: Utterance | None = None
        self._count = 0
        self.skip_partials = False
        self.decode_seconds = 0.0

    def push(self, audio: np.ndarray) -> list[TranscriptPartial | TranscriptFinal]:
        audio = np.asarray(audio, np.float32)
        events: list[TranscriptPartial | TranscriptFinal] = []
        base = self._samples
        self._samples += audio.size
        self._history = np.concatenate([self._history, audio])[-SR:]
        boundaries = self.endpointer.update(self.vad(audio))
        cursor = 0  # position in `audio` up to which the current utterance has been fed
        for b in boundaries:
            local = int(np.clip(b.sample - base, 0, audio.size))
            if b.kind == "start" and self._utt is None:
                self._utt = Utterance(start_sample=b.sample)
                # audio between the padded start and this chunk comes from the history buffer
                lead = base - b.sample
                if lead > 0:
                    self._utt.add(self._history[-(audio.size + lead):-audio.size or None][:lead])
                cursor = local
            elif b.kind == "end" and self._utt is not None:
                self._utt.add(audio[cursor:local])
                cursor = local
                events.extend(self._finalize())
        if self._utt is not None:
            self._utt.add(audio[cursor:])
            events.extend(self._maybe_partial_or_cut())
        return events

    def flush(self) -> list[TranscriptFinal]:
        """End of stream: whatever is being said is final now."""
        return self._finalize() if self._utt is not None and self._utt.samples > 0 else []

    # -- internals --

    def _maybe_partial_or_cut(self) -> list[TranscriptPartial | TranscriptFinal]:
        utt = self._utt
        assert utt is not None
        if utt.samples >= self.settings.max_utterance_s * SR:
            return self._cut_long_utterance()
        due = utt.samples - utt.last_partial_at >= self.settings.partial_interval_s * SR
        if not due or self.skip_partials or utt.samples < 0.8 * SR:
            return []
        if self.endpointer.silent_frames > 0:
            return []  # the speaker is pausing: the final may be moments away, keep the decoder free for it
        if self.language is None and not self._language_votes:
            self._maybe_detect_language(utt.array())  # once per speaker, then partials reuse it
        utt.last_partial_at = utt.samples
        hyp = self._decode(utt.array(), words=False, offset=utt.start_sample / SR)
        words = hyp.text.split()
        n = agreed_prefix(utt.previous_words, words)
        utt.previous_words = words
        return [TranscriptPartial(
            speaker=self.speaker, role=self.role, start=utt.start_sample / SR,
            end=(utt.start_sample + utt.samples) / SR, text=hyp.text, stable_text=" ".join(words[:n]),
            language=hyp.language,
        )]

    def _cut_long_utterance(self) -> list[TranscriptFinal]:
        """A very long turn: finalize up to the last word boundary, carry the rest over."""
        utt = self._utt
        assert utt is not None
        audio = utt.array()
        hyp = self._decode(audio, words=True, offset=0.0)
        cut = int(hyp.words[-2].end * SR) if len(hyp.words) >= 2 else audio.size
        cut = int(np.clip(cut, SR, audio.size))
        rest = audio[cut:]
        self._utt = Utterance(start_sample=utt.start_sample, audio=[audio[:cut]], samples=cut)
        events = self._finalize()
        self._utt = Utterance(start_sample=utt.start_sample + cut, audio=[rest], samples=rest.size)
        return events

    def _finalize(self) -> list[TranscriptFinal]:
        utt, self._utt = self._utt, None
        assert utt is not None
        audio = utt.array()
        if audio.size < 0.2 * SR:
            return []
        start = utt.start_sample / SR
        self._maybe_detect_language(audio)
        hyp = self._decode(audio, words=True, offset=start)
        if not hyp.text:
            return []
        self._count += 1
        end = start + audio.size / SR
        if hyp.words:  # the VAD's edges include padding and decay; word timings are tighter
            start, end = max(start, hyp.words[0].start), min(end, hyp.words[-1].end)
        return [TranscriptFinal(
            speaker=self.speaker, role=self.role, start=round(start, 3),
            end=round(end, 3), text=hyp.text, words=hyp.words,
            language=hyp.language, utterance_id=f"{self.speaker}-{self._count}",
            avg_logprob=hyp.avg_logprob, no_speech_prob=hyp.no_speech_prob,
        )]

    def _maybe_detect_language(self, audio: np.ndarray) -> None:
        """Per-speaker language: vote over the first utterances of at least 1 s, then lock."""
        if self.language or audio.size < SR:
            return
        lang, p = self.decoder.detect_language(audio, self.settings.languages)
        self._language_votes.append((lang, p))
        langs = [lg for lg, _ in self._language_votes]
        if p > 0.9 or len(langs) >= 3:
            self.language = max(set(langs), key=lambda lg: sum(q for x, q in self._language_votes if x == lg))

    def _decode(self, audio: np.ndarray, words: bool, offset: float) -> Hypothesis:
        t0 = time.perf_counter()
        language = self.language
        if language is None and self._language_votes:
            language = self._language_votes[-1][0]
        hyp = self.decoder.decode(audio, language, words, offset)
        self.decode_seconds += time.perf_counter() - t0
        return hyp
