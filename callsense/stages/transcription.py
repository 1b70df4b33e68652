"""Streaming speech recognition with faster-whisper, one `StreamingTranscriber` per speaker stream.

Policy: Silero VAD cuts the stream into utterances. While a person speaks, the utterance so far is
re-decoded every `partial_interval_s` (with a short encoder window: cheap, a little less accurate)
and the words two consecutive hypotheses agree on are the stable prefix (LocalAgreement-2). When the
VAD hears the end of the utterance (or it grows past `max_utterance_s`, cut at the last agreed
word), the whole utterance is decoded once more with word timestamps and emitted as final. Finals
are therefore decoded exactly as offline Whisper would decode that utterance, which keeps streaming
WER at the offline level.

Latency: the end of an utterance is only certain after `min_silence_s` of silence, so the final
decode starts speculatively after `speculate_after_s` on exactly the audio the final will have; if
the silence lasts, the final is ready when it is declared, if speech resumes the result is shown as
a partial. All decodes of a process pass one `DecodeGate`: finals queue and go first, partials and
speculative decodes only run on spare capacity and are skipped otherwise (never queued).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from callsense.audio.vad import FRAME, Endpointer, SileroVAD
from callsense.config import SAMPLE_RATE, AsrSettings
from callsense.events import Role, TranscriptFinal, TranscriptPartial, Word
from callsense.models import encoder_frames

Mode = Literal["final", "partial", "speculative"]
Vote = tuple[str, float]  # a language and its probability
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
    # a speculative final: samples decoded, result, and the language vote it was decoded with
    speculative: tuple[int, Hypothesis, Vote | None] | None = None

    def add(self, audio: np.ndarray) -> None:
        self.audio.append(audio)
        self.samples += audio.size

    def array(self) -> np.ndarray:
        if len(self.audio) > 1:
            self.audio = [np.concatenate(self.audio)]
        return self.audio[0] if self.audio else np.zeros(0, np.float32)


class DecodeGate:
    """Admission to the Whisper workers, shared by every stream of a process.

    Finals wait for a free slot and are served before anything optional. Optional decodes (partials,
    speculative finals) never wait: they run only when a slot is free, no final is waiting, and (with
    several slots) one slot stays free for finals. Under load partials thin out instead of pushing
    every call behind live.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = self.waiting = 0
        self.skipped = 0
        self._cond = threading.Condition()

    @contextmanager
    def final(self) -> Iterator[None]:
        with self._cond:
            self.waiting += 1
            self._cond.wait_for(lambda: self.busy < self.slots)
            self.waiting -= 1
            self.busy += 1
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def optional(self) -> Iterator[bool]:
        """Yields whether the decode may run now; a refused one is counted in `skipped`."""
        with self._cond:
            limit = self.slots - 1 if self.slots > 1 else 1
            admitted = not self.waiting and self.busy < limit
            if admitted:
                self.busy += 1
            else:
                self.skipped += 1
        try:
            yield admitted
        finally:
            if admitted:
                self._release()

    def _release(self) -> None:
        with self._cond:
            self.busy -= 1
            self._cond.notify_all()


class WhisperDecoder:
    """Thin wrapper over a faster-whisper model with the hallucination guards always on."""

    def __init__(self, model: Any, settings: AsrSettings, gate: DecodeGate | None = None,
                 beam_size: int | None = None) -> None:
        self.model, self.settings = model, settings
        self.gate = gate or DecodeGate(1)
        self.beam_size = beam_size or settings.beam_size

    def detect_language(self, audio: np.ndarray, allowed: Sequence[str]) -> tuple[str, float]:
        with self.gate.final():  # an encoder pass like any decode
            _, _, probs = self.model.detect_language(audio)
        ranked = [(lang, p) for lang, p in probs if not allowed or lang in allowed]
        lang, p = max(ranked, key=lambda lp: lp[1])
        total = sum(p for _, p in ranked) or 1.0
        return lang, p / total

    def decode(self, audio: np.ndarray, language: str | None, mode: Mode, offset: float,
               prompt: str = "") -> Hypothesis | None:
        """Finals (and speculative finals) get word timestamps, beam search and `prompt` (what the
        speaker said before); partials decode once, greedily, with a short encoder window and no
        prompt. None: an optional decode was skipped."""
        if mode == "final":
            with self.gate.final():
                return self._with_context(audio, language, offset, prompt)
        with self.gate.optional() as admitted:
            if not admitted:
                return None
            if mode == "speculative":  # exactly a final's decode, only earlier
                return self._with_context(audio, language, offset, prompt)
            window = max(self.settings.partial_window_s, audio.size / SAMPLE_RATE + 0.5)
            with encoder_frames(int(np.ceil(window) * 100)):
                return self._transcribe(audio, language, False, offset)

    def _with_context(self, audio: np.ndarray, language: str | None, offset: float, prompt: str) -> Hypothesis:
        """A prompt helps Whisper with short turns (names, terms, the language), but it can also make
        Whisper repeat it: a hypothesis that echoes its prompt is decoded again without one."""
        hyp = self._transcribe(audio, language, True, offset, prompt)
        if prompt and _echoes(prompt, hyp.text):
            hyp = self._transcribe(audio, language, True, offset)
        return hyp

    def _transcribe(self, audio: np.ndarray, language: str | None, words: bool, offset: float,
                    prompt: str = "") -> Hypothesis:
        s = self.settings
        segments, info = self.model.transcribe(
            audio, language=language, beam_size=self.beam_size if words else 1, word_timestamps=words,
            initial_prompt=prompt or None,
            vad_filter=False, condition_on_previous_text=False, without_timestamps=not words,
            no_speech_threshold=s.no_speech_threshold, log_prob_threshold=s.log_prob_threshold,
            compression_ratio_threshold=s.compression_ratio_threshold,
            # no sampling fallback: the same audio gives the same words on every run (audits need it)
            temperature=[0.0],
            # a cap well above real speech rates: a decode that loops on noise stops early
            max_new_tokens=min(440, int(24 + 16 * audio.size / SAMPLE_RATE)),
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
        if seg.compression_ratio > s.compression_ratio_threshold and _looping(seg.text):
            return True  # a long scripted disclosure compresses well too: only a real loop is dropped
        return bool(HALLUCINATIONS.search(seg.text))


def _looping(text: str) -> bool:
    """Whisper's failure mode on noise: the same few words over and over. True when one word 3-gram
    covers at least a third of the text, or one word repeats four or more times in a row."""
    words = [_norm(w) for w in text.split() if _norm(w)]
    if len(words) < 6:
        return False
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    top = max(grams.count(g) for g in set(grams))
    runs = max(sum(1 for _ in group) for _, group in itertools.groupby(words))
    return top * 3 >= len(words) or runs >= 4


def _echoes(prompt: str, text: str, n: int = 4) -> bool:
    """The hypothesis repeats `n` words in a row of its prompt (or loops): prompt-induced, not heard."""
    said = [_norm(w) for w in text.split() if _norm(w)]
    context = [_norm(w) for w in prompt.split() if _norm(w)]
    grams = {tuple(context[i : i + n]) for i in range(len(context) - n + 1)}
    return any(tuple(said[i : i + n]) in grams for i in range(len(said) - n + 1)) or _looping(text)


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
        self._said: deque[str] = deque(maxlen=8)  # this speaker's last finals: the next final's prompt
        self.skip_partials = False

    def push(self, audio: np.ndarray) -> list[TranscriptPartial | TranscriptFinal]:
        audio = np.asarray(audio, np.float32)
        events: list[TranscriptPartial | TranscriptFinal] = []
        base = self._samples
        self._samples += audio.size
        self._history = np.concatenate([self._history, audio])[-SAMPLE_RATE:]
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
                events.extend(self._finalize(end_sample=b.sample))
        if self._utt is not None:
            self._utt.add(audio[cursor:])
            events.extend(self._maybe_partial_or_cut())
        if self._utt is not None and self.settings.speculate_after_s > 0:
            events.extend(self._speculate())
        return events

    @property
    def utterances(self) -> int:
        return self._count

    def seek(self, sample: int, utterances: int, vad: dict[str, str] | None = None) -> None:
        """Continue a stream another worker heard up to `sample` (nobody speaking there), where it had
        finished `utterances` utterances: ids and times go on from there. With its `vad` state the
        speech is cut into the same utterances as it would have been without the change."""
        self._samples, self._count, self._utt = sample, utterances, None
        if vad is not None:
            self.vad.restore(vad)
        self.endpointer.seek((sample - self.vad.pending) // FRAME)

    @property
    def speaking(self) -> bool:
        """Someone is talking on this stream now (an utterance is open)."""
        return self._utt is not None

    def flush(self) -> list[TranscriptFinal]:
        """End of stream: whatever is being said is final now."""
        return self._finalize() if self._utt is not None and self._utt.samples > 0 else []

    # -- internals --

    def _maybe_partial_or_cut(self) -> list[TranscriptPartial | TranscriptFinal]:
        utt = self._utt
        assert utt is not None
        if utt.samples >= self.settings.max_utterance_s * SAMPLE_RATE:
            return [*self._cut_long_utterance()]
        due = utt.samples - utt.last_partial_at >= self.settings.partial_interval_s * SAMPLE_RATE
        if not due or self.skip_partials or utt.samples < 0.8 * SAMPLE_RATE:
            return []
        if self.endpointer.silent_frames > 0:
            return []  # the speaker is pausing: the final may be moments away, keep the decoder free for it
        if self.language is None and not self._language_votes:
            self._maybe_detect_language(utt.array())  # once per speaker, then partials reuse it
        utt.last_partial_at = utt.samples
        hyp = self._decode(utt.array(), "partial", offset=utt.start_sample / SAMPLE_RATE)
        return [] if hyp is None else [self._partial(utt, hyp, utt.samples)]

    def _partial(self, utt: Utterance, hyp: Hypothesis, samples: int) -> TranscriptPartial:
        words = hyp.text.split()
        n = agreed_prefix(utt.previous_words, words)
        utt.previous_words = words
        return TranscriptPartial(
            speaker=self.speaker, role=self.role, start=utt.start_sample / SAMPLE_RATE,
            end=(utt.start_sample + samples) / SAMPLE_RATE, text=hyp.text, stable_text=" ".join(words[:n]),
            language=hyp.language,
        )

    def _speculate(self) -> list[TranscriptPartial]:
        """In a pause: decode the final now, on exactly the audio it will have if the silence lasts."""
        utt, ep = self._utt, self.endpointer
        assert utt is not None
        end = (ep.frame_index - ep.silent_frames) * FRAME + ep.pad  # where the end boundary will fall
        samples = end - utt.start_sample
        out: list[TranscriptPartial] = []
        if utt.speculative is not None and (ep.silent_frames == 0 or utt.speculative[0] != samples):
            # speech resumed (perhaps only for a frame): the result is no final, but still a fine partial
            done, hyp, _ = utt.speculative
            utt.speculative = None
            out = [self._partial(utt, hyp, done)] if hyp.text else []
        ready = ep.silent_frames * FRAME >= self.settings.speculate_after_s * SAMPLE_RATE
        if utt.speculative is None and ready and 0.2 * SAMPLE_RATE <= samples <= utt.samples:
            audio = utt.array()[:samples]
            vote = self._detect(audio)  # counted only if this becomes the final, as the final would count it
            early = self._decode(audio, "speculative", offset=utt.start_sample / SAMPLE_RATE, vote=vote)
            if early is not None:
                utt.speculative = (samples, early, vote)
        return out

    def _cut_long_utterance(self) -> list[TranscriptFinal]:
        """A very long turn: finalize up to the last word boundary, carry the rest over."""
        utt = self._utt
        assert utt is not None
        heard = utt.array()
        # decode exactly the first max_utterance_s: where the turn is cut does not depend on how the
        # audio happened to arrive (chunk sizes vary with load), so a replay cuts it the same way
        audio = heard[: int(self.settings.max_utterance_s * SAMPLE_RATE)]
        hyp = self._decode(audio, "final", offset=0.0)
        assert hyp is not None
        cut = int(hyp.words[-2].end * SAMPLE_RATE) if len(hyp.words) >= 2 else audio.size
        cut = int(np.clip(cut, SAMPLE_RATE, audio.size))
        rest = heard[cut:]
        self._utt = Utterance(start_sample=utt.start_sample, audio=[audio[:cut]], samples=cut)
        events = self._finalize()
        self._utt = Utterance(start_sample=utt.start_sample + cut, audio=[rest], samples=rest.size)
        return events

    def _finalize(self, end_sample: int | None = None) -> list[TranscriptFinal]:
        """`end_sample`: the VAD's padded end of speech; the silence after it (already fed) is dropped."""
        utt, self._utt = self._utt, None
        assert utt is not None
        audio = utt.array()
        if end_sample is not None:
            audio = audio[: max(end_sample - utt.start_sample, 0)]
        self._count += 1  # every utterance the VAD cut counts, heard or not: ids follow the audio alone
        if audio.size < 0.2 * SAMPLE_RATE:
            return []
        start = utt.start_sample / SAMPLE_RATE
        hyp: Hypothesis | None
        if utt.speculative is not None and utt.speculative[0] == audio.size:
            _, hyp, vote = utt.speculative  # decoded during the pause, on this very audio
            self._commit_vote(vote)
        else:
            self._maybe_detect_language(audio)
            hyp = self._decode(audio, "final", offset=start)
        assert hyp is not None  # finals are never skipped
        if not hyp.text:
            return []
        self._said.append(hyp.text)
        end = start + audio.size / SAMPLE_RATE
        if hyp.words:  # the VAD's edges include padding and decay; word timings are tighter
            start, end = max(start, hyp.words[0].start), min(end, hyp.words[-1].end)
        return [TranscriptFinal(
            speaker=self.speaker, role=self.role, start=round(start, 3),
            end=round(end, 3), text=hyp.text, words=hyp.words,
            language=hyp.language, utterance_id=f"{self.speaker}-{self._count}",
            avg_logprob=hyp.avg_logprob, no_speech_prob=hyp.no_speech_prob,
        )]

    def _maybe_detect_language(self, audio: np.ndarray) -> None:
        self._commit_vote(self._detect(audio))

    def _detect(self, audio: np.ndarray) -> Vote | None:
        """Per-speaker language: a vote from each of the first utterances of at least 1 s, then locked."""
        if self.language or audio.size < SAMPLE_RATE:
            return None
        return self.decoder.detect_language(audio, self.settings.languages)

    def _with_vote(self, vote: Vote | None) -> tuple[list[Vote], str | None]:
        """The votes and the locked language there would be after counting `vote` (nothing changes yet)."""
        votes = self._language_votes + ([vote] if vote else [])
        locked = self.language
        if locked is None and vote is not None and (vote[1] > 0.9 or len(votes) >= 3):
            locked = max({lg for lg, _ in votes}, key=lambda lg: sum(q for x, q in votes if x == lg))
        return votes, locked

    def _commit_vote(self, vote: Vote | None) -> None:
        self._language_votes, self.language = self._with_vote(vote)

    def _decode(self, audio: np.ndarray, mode: Mode, offset: float, vote: Vote | None = None) -> Hypothesis | None:
        """Decode in the language known so far, counting `vote` (not yet committed) as if it were."""
        votes, language = self._with_vote(vote)
        if language is None and votes:
            language = votes[-1][0]
        return self.decoder.decode(audio, language, mode, offset, self._prompt() if mode != "partial" else "")

    def _prompt(self) -> str:
        """The end of what this speaker said before, cut at a word boundary."""
        limit = self.settings.prompt_chars
        text = " ".join(self._said)[-limit:] if limit > 0 else ""
        return text if len(text) < limit else text.partition(" ")[2]
