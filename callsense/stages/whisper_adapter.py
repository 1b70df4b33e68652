"""Every use of faster-whisper, in one module.

callsense decodes live finals in batches from faster-whisper's building blocks (as its own
`BatchedInferencePipeline` does), runs Whisper's encoder on windows shorter than 30 s and reads
segments out of raw token sequences. Several of the names that takes are private or undocumented in
faster-whisper 1.x (`_split_segments_by_timestamps`, `add_word_timestamps`, `get_prompt`, `encode`,
the CTranslate2 model's `generate`): a minor release may rename them or change their arguments,
which the `<2` pin does not prevent. So nothing else in callsense touches faster-whisper: the decoder
(`stages.whisper`) calls `FasterWhisper`, `load_whisper` builds the model, and `contract_breaks`
(run by `callsense models check` and `tests/test_whisper_adapter.py`) compares each name's signature
with what this module passes, so an incompatible release fails there first, with the name.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callsense.config import ModelSettings
from callsense.models import ModelMissing, whisper_source

PREPEND = "\"'“¿([{-"  # punctuation merged into the next word (faster-whisper's defaults)
APPEND = "\"'.。,，!！?？:：”)]}、"

# (module, attribute path, the parameters this module passes, in order): what `contract_breaks` checks
CONTRACT: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "faster_whisper.transcribe",
        "WhisperModel._split_segments_by_timestamps",
        ("self", "tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"),
    ),
    (
        "faster_whisper.transcribe",
        "WhisperModel.add_word_timestamps",
        (
            "self",
            "segments",
            "tokenizer",
            "encoder_output",
            "num_frames",
            "prepend_punctuations",
            "append_punctuations",
            "last_speech_timestamp",
        ),
    ),
    ("faster_whisper.transcribe", "WhisperModel.get_prompt", ("self", "tokenizer", "previous_tokens")),
    ("faster_whisper.transcribe", "WhisperModel.encode", ("self", "features")),
    ("faster_whisper.transcribe", "WhisperModel.detect_language", ("self", "audio")),
    ("faster_whisper.transcribe", "get_suppressed_tokens", ("tokenizer", "suppress_tokens")),
    ("faster_whisper.transcribe", "get_compression_ratio", ("text",)),
    ("faster_whisper.audio", "pad_or_trim", ("array",)),
    ("faster_whisper.tokenizer", "Tokenizer.__init__", ("self", "tokenizer", "multilingual", "task", "language")),
]


def contract_breaks() -> list[str]:
    """What the installed faster-whisper lacks of what this module calls (empty: all there)."""
    import importlib

    broken = []
    for module, path, params in CONTRACT:
        try:
            obj: Any = importlib.import_module(module)
            for part in path.split("."):
                obj = getattr(obj, part)
            names = tuple(inspect.signature(obj).parameters)
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            broken.append(f"{module}.{path}: {type(exc).__name__}: {exc}")
            continue
        if names[: len(params)] != params:
            broken.append(f"{module}.{path}: takes {names}, callsense passes {params}")
    return broken


# --- the model: Whisper's encoder on a shorter window --------------------------------------------

_encoder = threading.local()


@contextmanager
def encoder_frames(frames: int | None) -> Iterator[None]:
    """Within this block (this thread only), Whisper's encoder sees `frames` mel frames instead of 30 s.

    faster-whisper pads every input to a 30 s window: about 0.5 s of encoder on 2 CPU threads however
    short the audio. A 10 s window costs about 0.08 s but Whisper was trained on 30 s windows and loses
    some accuracy (Russian read speech: WER 0.174 -> 0.190): partials use 10 s, finals 15 s when they
    fit it, else 30 s (`asr.final_window_s`), and a final that loops is decoded again with the full window.
    """
    before = getattr(_encoder, "frames", None)
    _encoder.frames = frames
    try:
        yield
    finally:
        _encoder.frames = before


def _whisper_class() -> type:
    from faster_whisper import WhisperModel

    class Whisper(WhisperModel):  # type: ignore[misc]
        def encode(self, features: Any) -> Any:
            frames = getattr(_encoder, "frames", None)
            if frames is not None and features.shape[-1] > frames:
                features = np.ascontiguousarray(features[..., :frames])
            return super().encode(features)

    return Whisper


def load_whisper(settings: ModelSettings) -> Any:
    """The configured Whisper model (CPU) with the shorter encoder window; ModelMissing says what to do."""
    source = whisper_source(settings)
    local = Path(source).exists()
    try:
        return _whisper_class()(
            source,
            device="cpu",
            compute_type=settings.whisper_compute_type,
            cpu_threads=settings.whisper_threads,
            num_workers=settings.whisper_workers,
            local_files_only=local,
        )
    except Exception as exc:
        if local:
            raise
        raise ModelMissing(
            f"could not fetch the Whisper model {source!r} ({type(exc).__name__}); it needs network "
            "access once, or set models.whisper to a local folder or to bundled"
        ) from exc


# --- decoding from the building blocks ---------------------------------------------------------


@dataclass
class Guarded:
    """A segment as the hallucination guards see it, from the batched or the sequential path."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Timed]


@dataclass
class Timed:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Decoded:
    """One window's beam search: its segments (with words) and where Whisper stopped, in seconds."""

    segments: list[Guarded]
    stopped_s: float


class FasterWhisper:
    """A loaded faster-whisper model, used the way `stages.whisper.WhisperDecoder` needs it."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode(self, audios: Sequence[np.ndarray]) -> tuple[Any, list[int]]:
        """One encoder pass over the pieces (each padded to the window): the encoder output and each
        piece's own number of mel frames."""
        from faster_whisper.audio import pad_or_trim

        feats = [self.model.feature_extractor(a)[..., :-1] for a in audios]
        return self.model.encode(np.stack([pad_or_trim(f) for f in feats])), [f.shape[-1] for f in feats]

    @staticmethod
    def rows(encoded: Any, idx: list[int]) -> Any:
        """Some rows of an encoder output, as an encoder output."""
        from ctranslate2 import StorageView

        return StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[idx]))

    def languages(self, encoded: Any) -> list[list[tuple[str, float]]]:
        """Each row's language probabilities, from an encoder pass already paid for."""
        return [[(t[2:-2], p) for t, p in row] for row in self.model.model.detect_language(encoded)]

    def detect_language(self, audio: np.ndarray) -> list[tuple[str, float]]:
        _, _, probs = self.model.detect_language(audio)
        return list(probs)

    def prompt_tokens(self, text: str) -> list[int]:
        """`text` as prompt tokens (the same in every language; only the start sequence differs)."""
        text = text.strip()
        return self.model.hf_tokenizer.encode(" " + text, add_special_tokens=False).ids if text else []

    def generate(
        self,
        encoded: Any,
        frames: list[int],
        language: str,
        previous: list[list[int]],
        beam_size: int,
        new_tokens: int,
        max_initial_timestamp: int,
    ) -> list[Decoded]:
        """Beam search with timestamps and word timings over rows of one language and prompt length."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        tok = Tokenizer(m.hf_tokenizer, True, task="transcribe", language=language)
        prompts = [m.get_prompt(tok, p) for p in previous]
        results = m.model.generate(
            encoded,
            prompts,
            beam_size=beam_size,
            patience=1,
            length_penalty=1,
            max_length=min(m.max_length, max(len(p) for p in prompts) + new_tokens),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tok, [-1])),
            max_initial_timestamp_index=max_initial_timestamp,
        )
        split = [self._split(tok, res, n) for res, n in zip(results, frames, strict=True)]
        segments = [segs for segs, _ in split]
        if any(segments):
            m.add_word_timestamps(segments, tok, encoded, frames, PREPEND, APPEND, 0.0)
        return [Decoded([_guarded(s) for s in segs], stopped) for segs, (_, stopped) in zip(segments, split, strict=True)]

    def _split(self, tok: Any, result: Any, frames: int) -> tuple[list[dict[str, Any]], float]:
        """One window's tokens as faster-whisper segments, and where decoding has to go on from
        (the end of the window, or the last timestamp when Whisper stopped early)."""
        from faster_whisper.transcribe import get_compression_ratio

        tokens = list(result.sequences_ids[0])
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        subs, seek, _ = self.model._split_segments_by_timestamps(
            tokenizer=tok, tokens=tokens, time_offset=0.0, segment_size=frames, segment_duration=frames / 100, seek=0
        )
        out = []
        for s in subs:
            text = tok.decode(s["tokens"])
            if text.strip():
                out.append(
                    {
                        **s,
                        "text": text,
                        "avg_logprob": avg_logprob,
                        "no_speech_prob": result.no_speech_prob,
                        "compression_ratio": get_compression_ratio(text),
                    }
                )
        return out, min(seek, frames) / 100

    def greedy(
        self, audio: np.ndarray, language: str | None, thresholds: tuple[float, float, float], max_new_tokens: int
    ) -> tuple[list[Guarded], str | None]:
        """faster-whisper's own sequential path (public API): greedy, no timestamps, no prompt.
        `thresholds`: no-speech, log-probability and compression-ratio, as faster-whisper takes them."""
        no_speech, log_prob, compression = thresholds
        segments, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=1,
            word_timestamps=False,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            no_speech_threshold=no_speech,
            log_prob_threshold=log_prob,
            compression_ratio_threshold=compression,
            temperature=[0.0],
            max_new_tokens=max_new_tokens,
        )
        out = [Guarded(s.text, s.avg_logprob, s.no_speech_prob, s.compression_ratio, []) for s in segments]
        return out, info.language


def _guarded(s: dict[str, Any]) -> Guarded:
    words = [Timed(w["word"], w["start"], w["end"], w["probability"]) for w in s.get("words", [])]
    return Guarded(s["text"], s["avg_logprob"], s["no_speech_prob"], s["compression_ratio"], words)
