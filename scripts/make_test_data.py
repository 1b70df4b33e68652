"""Builds tests/data: the small real clips the test suite carries, so a clone without ../shared runs
the same suite. Each clip keeps its source's folder layout (tests read it like ../shared/data) and is
re-encoded to 16 kHz mono 16-bit FLAC, the pipeline's own rate, to stay small. Sources and licences:
tests/data/README.md.

    python scripts/make_test_data.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import soundfile as sf

from callsense.audio.files import read_audio
from callsense.config import SAMPLE_RATE

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"
CLIPS = [
    "asr/en_faster_whisper_testdata/audio/jfk.flac",
    "asr/ru_read_msu/audio/ru_0001.flac",
    "asr/ru_read_msu/audio/ru_0002.flac",
    "asr/ru_read_msu/audio/ru_0003.flac",
    "asr/ru_read_msu/audio/ru_0004.flac",
    "asr/ru_phone_prompts/audio/silence__10.flac",
    "asr/ru_phone_prompts/audio/silence__5.flac",
    "asr/en_phone_prompts/audio/vm-intro.flac",
]
FILES = ["dialogues/en_abcd_sample/abcd_sample.json"]
EMODB_PER_GROUP = 6  # clips per (speaker, emotion), anger and neutral only


def _clip(src: Path, dst: Path) -> None:
    """Copied as it is when already small (telephone clips keep their 8 kHz: tests resample them)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    info = sf.info(str(src))
    if info.samplerate <= SAMPLE_RATE and info.channels == 1:
        shutil.copyfile(src, dst)
        return
    audio = read_audio(src).mean(axis=0)
    sf.write(dst, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")


def _emodb(shared: Path) -> None:
    root = shared / "emotion_speech" / "de_emodb"
    out = OUT / "emotion_speech" / "de_emodb"
    kept, counts = [], {}
    with (root / "labels.tsv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        fields = reader.fieldnames or []
        for row in reader:
            key = (row["speaker"], row["emotion"])
            if row["emotion"] in ("anger", "neutral") and counts.get(key, 0) < EMODB_PER_GROUP:
                counts[key] = counts.get(key, 0) + 1
                _clip(root / row["audio"], out / row["audio"])
                kept.append(row)
    with (out / "labels.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, delimiter="\t")
        writer.writeheader()
        writer.writerows(kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    args = p.parse_args()
    for rel in CLIPS:
        _clip(args.shared / rel, OUT / rel)
    for rel in FILES:
        (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.shared / rel, OUT / rel)
    _emodb(args.shared)
    print(f"tests/data: {sum(f.stat().st_size for f in OUT.rglob('*') if f.is_file()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
