"""Constructed calls from real recordings: real speech, arranged timing, references that follow.

Used by scripts/make_samples.py (the sample calls) and by the whole-call WER block of the bench
(calls built fresh from the data folder, so the figure is not tied to one sample clip).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from callsense.audio.files import read_audio

SR = 16000


def texts(tsv: Path) -> dict[str, dict[str, str]]:
    with tsv.open(encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh, delimiter="\t")}


def trim(audio: np.ndarray, floor_db: float = -40) -> np.ndarray:
    """Cut leading and trailing silence so the turn timing is the speech timing."""
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10((frames**2).mean(1) + 1e-10)
    voiced = np.flatnonzero(db > db.max() + floor_db)
    return audio[voiced[0] * 160 : (voiced[-1] + 1) * 160] if voiced.size else audio


class CallBuilder:
    """Places real utterances on a timeline, one channel per party; `gap` < 0 makes an overlap."""

    def __init__(self, roles: list[str]) -> None:
        self.roles = roles
        self.turns: list[dict[str, Any]] = []
        self.cursor = 0.5

    def say(self, role: str, path: Path, text: str, gap: float = 0.6) -> None:
        audio = trim(read_audio(path)[0])
        start = max(0.0, self.cursor + gap)
        self.turns.append(
            {
                "role": role,
                "start": round(start, 3),
                "end": round(start + audio.size / SR, 3),
                "text": text,
                "audio": audio,
                "source": str(path.relative_to(path.parents[3])),
            }
        )
        self.cursor = start + audio.size / SR

    def render(self, mono: bool = False) -> np.ndarray:
        n = int((self.cursor + 0.8) * SR)
        out = np.zeros((1 if mono else len(self.roles), n), np.float32)
        for t in self.turns:
            ch = 0 if mono else self.roles.index(t["role"])
            a = int(t["start"] * SR)
            out[ch, a : a + t["audio"].size] += t["audio"]
        return out

    def reference(self, role: str) -> str:
        return " ".join(t["text"] for t in self.turns if t["role"] == role)

    def write(self, folder: Path, name: str, mono: bool = False) -> None:
        audio = self.render(mono)
        sf.write(folder / f"{name}.flac", audio.T, SR)
        with (folder / f"{name}.rttm").open("w") as fh:
            for t in self.turns:
                fh.write(f"SPEAKER {name} 1 {t['start']:.3f} {t['end'] - t['start']:.3f} <NA> <NA> {t['role']} <NA> <NA>\n")
        ref = {
            "file": f"{name}.flac",
            "channels": "mono" if mono else self.roles,
            "turns": [{k: v for k, v in t.items() if k != "audio"} for t in self.turns],
        }
        (folder / f"{name}.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1))
