"""Whisper decoding for the transcription stage: batched, guarded, deterministic.

`WhisperDecoder.decode_batch` decodes several pieces of audio as one CTranslate2 batch: one encoder
pass over the stacked windows, one beam search over every item's prompt, one alignment for word
timings (faster-whisper's own building blocks, as its `BatchedInferencePipeline` uses them, reached
through `stages.whisper_adapter`). A piece may hold several utterances of one speaker packed into one
window (recordings, see `stages.packing`): the window is paid once instead of once per utterance.
Every decode of a process passes one `DecodeGate` (`stages.decode_gate`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from callsense.config import SAMPLE_RATE, AsrSettings
from callsense.events import Word
from callsense.stages.decode_gate import DecodeGate
from callsense.stages.whisper_adapter import FasterWhisper, Guarded, encoder_frames

Mode = Literal["final", "partial", "speculative"]
# Phrases Whisper is known to invent on silence, music and noise (subtitle credits and sign-offs).
HALLUCINATIONS = re.compile(
    r"(продолжение следует|субтитры (сделал|создавал|подготовил)|редактор субтитров|спасибо за просмотр|"
    r"подписывайтесь на канал|thank(s| you) for watching|please subscribe|subtitles by|amara\.org|"
    r"www\.|\.com\b)",
    re.IGNORECASE,
)
MAX_INITIAL_TIMESTAMP = 50  # the first timestamp within 1 s (faster-whisper's default for one window)
MIN_REST_S = 0.3  # audio left after Whisper stopped early that is decoded again
FULL_WINDOW = 3000  # mel frames in Whisper's 30 s window
# A word said again and again by a person ("no, no, no, no") comes at most about 4 a second; Whisper's
# loops on noise squeeze a run of one word into a fraction of a second, some words 0 ms long.
MAX_RUN_WORDS_PER_S = 6.0
MIN_RUN = 4  # one word this many times in a row is a run worth checking
T = TypeVar("T")


@dataclass
class Hypothesis:
    text: str
    words: list[Word]
    language: str | None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    degenerate: int = 0  # segments dropped as a decoding loop ("— — —", one phrase over and over)

    def only(self, words: list[Word]) -> Hypothesis:
        """The same decode, holding only `words` (part of a turn, or one turn of a packed window)."""
        return Hypothesis(" ".join(w.word for w in words), words, self.language, self.avg_logprob, self.no_speech_prob)

    def extend(self, more: Hypothesis) -> Hypothesis:
        """This hypothesis followed by `more` (the same audio decoded on from where this one stopped)."""
        scores = [x for x in (self.avg_logprob, more.avg_logprob) if x is not None]
        silence = [x for x in (self.no_speech_prob, more.no_speech_prob) if x is not None]
        return Hypothesis(
            " ".join(t for t in (self.text, more.text) if t),
            self.words + more.words,
            self.language,
            min(scores) if scores else None,
            max(silence) if silence else None,
            self.degenerate + more.degenerate,
        )


@dataclass
class DecodeRequest:
    """One piece of audio (at most 30 s) to decode; word times are shifted by `offset`."""

    audio: np.ndarray
    language: str | None
    offset: float = 0.0
    prompt: str = ""


class WhisperDecoder:
    """A faster-whisper model with the hallucination guards always on."""

    def __init__(self, model: Any, settings: AsrSettings, gate: DecodeGate | None = None, beam_size: int = 5) -> None:
        """`model`: a faster-whisper model (`whisper_adapter.load_whisper`); `beam_size`: the call
        profile's (`profiles.live/recording.beam_size`)."""
        self.model, self.settings = model, settings
        self.fw = FasterWhisper(model)
        self.gate = gate or DecodeGate(1)
        self.gate.join(self)
        self.beam_size = beam_size

    def close(self) -> None:
        """The call is over: its finals no longer keep other calls' finals waiting for company."""
        self.gate.leave(self)

    def detect_language(self, audio: np.ndarray, allowed: Sequence[str]) -> tuple[str, float]:
        # an encoder pass like any decode, over a final's window: the language is as clear in 15 s
        with self.gate.final(), encoder_frames(self._window(audio.size)):
            probs = self.fw.detect_language(audio)
        return _best_language(probs, allowed)

    def decode(
        self, audio: np.ndarray, language: str | None, mode: Mode, offset: float, prompt: str = ""
    ) -> Hypothesis | None:
        """Finals (and speculative finals) get word timestamps, beam search and `prompt` (what the
        speaker said before); finals are batched with other calls' finals. Partials decode once,
        greedily, with a short encoder window and no prompt. None: an optional decode was skipped."""
        request = DecodeRequest(audio, language, offset, prompt)
        if mode == "final":
            # finals batch only with finals of the same language and encoder window: a final's words
            # do not depend on which other calls' finals happened to be waiting with it
            return self.gate.batched((language, self._window(audio.size)), request, self.decode_batch, self)
        with self.gate.optional() as admitted:
            if not admitted:
                return None
            if mode == "speculative":  # exactly a final's decode, only earlier
                return self.decode_batch([request])[0]
            window = max(self.settings.partial_window_s, audio.size / SAMPLE_RATE + 0.5)
            with encoder_frames(int(np.ceil(window) * 100)):
                return self._greedy(audio, language, offset)

    def decode_batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        """Final-quality decodes of several pieces at once (call within a gate slot). Each piece is
        decoded in its own encoder window, so its words do not depend on the company it came in."""
        windows = [self._window(r.audio.size) for r in requests]
        out: dict[int, Hypothesis] = {}
        for window in dict.fromkeys(windows):
            idx = [i for i, w in enumerate(windows) if w == window]
            out.update(zip(idx, self._windowed([requests[i] for i in idx], window), strict=True))
        return [out[i] for i in range(len(requests))]

    def _windowed(self, requests: list[DecodeRequest], frames: int | None) -> list[Hypothesis]:
        with encoder_frames(frames):
            hyps = self._decode_batch(requests)
        if frames is None or frames >= FULL_WINDOW:
            return hyps
        # a shortened window can send Whisper into a loop on audio that the full 30 s window decodes
        # well (seen on a 22 s Russian turn: "— — — ..."): decode those pieces again with it
        again = [i for i, h in enumerate(hyps) if h.degenerate]
        if again:
            for i, h in zip(again, self._decode_batch([requests[i] for i in again]), strict=True):
                hyps[i] = h
        return hyps

    def _window(self, samples: int) -> int | None:
        """The encoder window for finals of up to `samples`: `final_window_s` when the piece and 1 s
        fit in it, else Whisper's own 30 s (None). The encoder is most of a final's cost and a 15 s
        window decodes turns of a call as well; sizes in between (a 22 s piece in a 24-28 s window)
        sent Whisper into loops and lost words of packed recordings (docs/changelog.md › Speech recognition)."""
        window = self.settings.final_window_s
        if window <= 0 or samples / SAMPLE_RATE + 1.0 > window:
            return None
        return int(np.ceil(window)) * 100

    def _decode_batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        hyps = self._batch(requests)
        # a prompt helps Whisper with short turns, but it can make Whisper repeat it: a hypothesis
        # that echoes its prompt is decoded again without one
        again = [i for i, (r, h) in enumerate(zip(requests, hyps, strict=True)) if r.prompt and _echoes(r.prompt, h.text)]
        if again:
            redone = self._batch([DecodeRequest(requests[i].audio, hyps[i].language, requests[i].offset) for i in again])
            for i, h in zip(again, redone, strict=True):
                hyps[i] = h
        return hyps

    # -- internals --

    def _batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        encoded, frames = self.fw.encode([r.audio for r in requests])
        languages = self._languages(requests, encoded)
        previous = [self.fw.prompt_tokens(r.prompt) for r in requests]
        keys = [(lang, len(p)) for lang, p in zip(languages, previous, strict=True)]
        groups = {key: [i for i, k in enumerate(keys) if k == key] for key in dict.fromkeys(keys)}
        if len(groups) == 1:
            return self._generate(requests, frames, encoded, languages[0], previous)
        # one alignment needs one language, one beam search one prompt length (CTranslate2 needs
        # <|startoftranscript|> at one position across a batch): each group is decoded alone, on
        # its rows of this encoder pass
        out: dict[int, Hypothesis] = {}
        for (lang, _), idx in groups.items():
            part = self.fw.rows(encoded, idx)
            hyps = self._generate(
                [requests[i] for i in idx], [frames[i] for i in idx], part, lang, [previous[i] for i in idx]
            )
            out.update(zip(idx, hyps, strict=True))
        return [out[i] for i in range(len(requests))]

    def _generate(
        self, requests: list[DecodeRequest], frames: list[int], encoded: Any, language: str, previous: list[list[int]]
    ) -> list[Hypothesis]:
        """Beam search and word timings for pieces of one language and prompt length, from their
        encoder output. Prompts are not trimmed to common lengths: that let more finals batch but
        cost 2 WER points on the constructed calls, and live finals rarely meet in a batch anyway."""
        new_tokens = max(_token_cap(r.audio.size / SAMPLE_RATE, timestamps=True) for r in requests)
        decoded = self.fw.generate(encoded, frames, language, previous, self.beam_size, new_tokens, MAX_INITIAL_TIMESTAMP)
        hyps = [self._hypothesis(d.segments, language, r.offset) for d, r in zip(decoded, requests, strict=True)]
        return self._rest(requests, hyps, [d.stopped_s for d in decoded], language)

    def _rest(
        self, requests: list[DecodeRequest], hyps: list[Hypothesis], seeks: list[float], language: str
    ) -> list[Hypothesis]:
        """Whisper may stop before the end of its window (a timestamp pair, then the end): as
        faster-whisper's sequential path does, the rest of the audio is decoded again from there,
        in a window for the rest (a few seconds of a packed window need no 30 s encoder pass)."""
        todo = [
            i
            for i, (r, seek) in enumerate(zip(requests, seeks, strict=True))
            if r.audio.size / SAMPLE_RATE - seek >= MIN_REST_S
        ]
        if not todo:
            return hyps
        rest = self.decode_batch(
            [
                DecodeRequest(requests[i].audio[int(seeks[i] * SAMPLE_RATE) :], language, requests[i].offset + seeks[i])
                for i in todo
            ]
        )
        for i, more in zip(todo, rest, strict=True):
            hyps[i] = hyps[i].extend(more)
        return hyps

    def _languages(self, requests: list[DecodeRequest], encoded: Any) -> list[str]:
        if all(r.language for r in requests):
            return [str(r.language) for r in requests]
        detected = self.fw.languages(encoded)  # from the encoder pass already paid for
        return [r.language or _best_language(d, self.settings.languages)[0] for r, d in zip(requests, detected, strict=True)]

    def _greedy(self, audio: np.ndarray, language: str | None, offset: float) -> Hypothesis:
        """A partial: faster-whisper's own sequential path, greedy, no timestamps."""
        s = self.settings
        segments, detected = self.fw.greedy(
            audio,
            language,
            (s.no_speech_threshold, s.log_prob_threshold, s.compression_ratio_threshold),
            _token_cap(audio.size / SAMPLE_RATE, timestamps=False),
        )
        return self._hypothesis(segments, detected, offset)

    def _hypothesis(self, segments: Iterable[Guarded], language: str | None, offset: float) -> Hypothesis:
        kept, out_words, logprobs, nsp = [], [], [], []
        degenerate = 0
        for seg in segments:
            if self._degenerate(seg):
                degenerate += 1
                continue
            if self._hallucinated(seg):
                continue
            kept.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
            nsp.append(seg.no_speech_prob)
            for w in seg.words:
                out_words.append(
                    Word(
                        start=round(w.start + offset, 3),
                        end=round(w.end + offset, 3),
                        word=w.word.strip(),
                        probability=round(w.probability, 3),
                    )
                )
        return Hypothesis(
            " ".join(t for t in kept if t),
            out_words,
            language,
            float(np.mean(logprobs)) if logprobs else None,
            float(np.max(nsp)) if nsp else None,
            degenerate,
        )

    def _degenerate(self, seg: Guarded) -> bool:
        """A decoding loop: text without a single letter or digit, or one phrase over and over
        (a long scripted disclosure compresses well too: only a real loop counts) that either
        compresses like a loop or whose repeated word comes faster than anyone says it."""
        if seg.text.strip() and not re.search(r"\w", seg.text):
            return True
        if not _looping(seg.text):
            return False
        return seg.compression_ratio > self.settings.compression_ratio_threshold or _run_too_fast(seg.words)

    def _hallucinated(self, seg: Guarded) -> bool:
        s = self.settings
        if seg.no_speech_prob > s.no_speech_threshold and seg.avg_logprob < s.log_prob_threshold:
            return True
        return bool(HALLUCINATIONS.search(seg.text))


def _token_cap(seconds: float, timestamps: bool) -> int:
    """A cap well above real speech rates, so a decode that loops on noise stops early. Russian takes
    about 5 tokens a word in Whisper's vocabulary; timestamps add a pair per segment."""
    return min(440, int(24 + (32 if timestamps else 16) * seconds))


def _best_language(probs: Iterable[tuple[str, float]], allowed: Sequence[str]) -> tuple[str, float]:
    """The likeliest of the `allowed` languages, its probability renormalised over them."""
    probs = list(probs)
    ranked = [(lang, p) for lang, p in probs if not allowed or lang in allowed] or probs
    lang, p = max(ranked, key=lambda lp: lp[1])
    total = sum(q for _, q in ranked) or 1.0
    return lang, p / total


def _looping(text: str) -> bool:
    """Whisper's failure mode on noise: the same few words over and over. True when one word 3-gram
    covers at least a third of the text, or one word repeats four or more times in a row."""
    words = [norm_word(w) for w in text.split() if norm_word(w)]
    if len(words) < 6:
        return False
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    top = max(grams.count(g) for g in set(grams))
    return top * 3 >= len(words) or len(_longest_run(words, str)) >= MIN_RUN


def _longest_run(items: Sequence[T], key: Callable[[T], str]) -> list[T]:
    """The longest stretch of consecutive items with one key (the first, on a tie)."""
    best: list[T] = []
    for _, group in itertools.groupby(items, key=key):
        run = list(group)
        best = run if len(run) > len(best) else best
    return best


def _run_too_fast(words: Sequence[Any]) -> bool:
    """The longest run of one word (by the words' own timings) is said faster than a person can."""
    run = _longest_run(words, lambda w: norm_word(w.word))
    return len(run) >= MIN_RUN and run[-1].end - run[0].start < len(run) / MAX_RUN_WORDS_PER_S


def _echoes(prompt: str, text: str, n: int = 4) -> bool:
    """The hypothesis repeats `n` words in a row of its prompt (or loops): prompt-induced, not heard."""
    said = [norm_word(w) for w in text.split() if norm_word(w)]
    context = [norm_word(w) for w in prompt.split() if norm_word(w)]
    grams = {tuple(context[i : i + n]) for i in range(len(context) - n + 1)}
    return any(tuple(said[i : i + n]) in grams for i in range(len(said) - n + 1)) or _looping(text)


def norm_word(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())
