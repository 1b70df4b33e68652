"""Build the sample calls in samples/ from real recordings in ../shared/data (see samples/README.md).

No sample is synthesised: every second of speech is a real recording; only the timing (who speaks
when, pauses, overlaps) is arranged here, and the reference RTTM and transcripts follow from it.
    .venv/bin/python scripts/make_samples.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from callsense.audio.files import read_audio

ROOT = Path(__file__).resolve().parent.parent
SR = 16000


def texts(tsv: Path) -> dict[str, dict]:
    with tsv.open(encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh, delimiter="\t")}


def trim(audio: np.ndarray, floor_db: float = -40) -> np.ndarray:
    """Cut leading and trailing silence so the turn timing below is the speech timing."""
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10((frames**2).mean(1) + 1e-10)
    voiced = np.flatnonzero(db > db.max() + floor_db)
    return audio[voiced[0] * 160 : (voiced[-1] + 1) * 160] if voiced.size else audio


class CallBuilder:
    """Places real utterances on a timeline, one channel per party; `gap` < 0 makes an overlap."""

    def __init__(self, roles: list[str]) -> None:
        self.roles = roles
        self.turns: list[dict] = []
        self.cursor = 0.5

    def say(self, role: str, path: Path, text: str, gap: float = 0.6) -> None:
        audio = trim(read_audio(path)[0])
        start = max(0.0, self.cursor + gap)
        self.turns.append({"role": role, "start": round(start, 3), "end": round(start + audio.size / SR, 3),
                           "text": text, "audio": audio, "source": str(path.relative_to(path.parents[3]))})
        self.cursor = start + audio.size / SR

    def render(self, mono: bool = False) -> np.ndarray:
        n = int((self.cursor + 0.8) * SR)
        out = np.zeros((1 if mono else len(self.roles), n), np.float32)
        for t in self.turns:
            ch = 0 if mono else self.roles.index(t["role"])
            a = int(t["start"] * SR)
            out[ch, a : a + t["audio"].size] += t["audio"]
        return out

    def write(self, name: str, mono: bool = False) -> None:
        audio = self.render(mono)
        sf.write(ROOT / "samples" / f"{name}.flac", audio.T, SR)
        with (ROOT / "samples" / f"{name}.rttm").open("w") as fh:
            for t in self.turns:
                fh.write(f"SPEAKER {name} 1 {t['start']:.3f} {t['end'] - t['start']:.3f} <NA> <NA> "
                         f"{t['role']} <NA> <NA>\n")
        ref = {"file": f"{name}.flac", "channels": "mono" if mono else self.roles,
               "turns": [{k: v for k, v in t.items() if k != "audio"} for t in self.turns]}
        (ROOT / "samples" / f"{name}.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1))


def ru_call(data: Path) -> CallBuilder:
    """Operator: the female Asterisk prompt voice; customer: the male MSU reader. One 11 s hold,
    and the operator talks over the customer three times."""
    op_dir, cu_dir = data / "asr" / "ru_phone_prompts", data / "asr" / "ru_read_msu"
    op, cu = texts(op_dir / "transcripts.tsv"), texts(cu_dir / "transcripts.tsv")
    b = CallBuilder(["operator", "customer"])

    def o(key: str, gap: float = 0.6) -> None:
        b.say("operator", op_dir / op[key]["audio"], op[key]["text"], gap)

    def c(key: str, gap: float = 0.6) -> None:
        b.say("customer", cu_dir / cu[key]["audio"], cu[key]["text"], gap)

    o("hello", 0.0)
    c("ru_0003")
    o("auth-thankyou")
    c("ru_0054")
    o("vm-press", -1.2)          # operator talks over the customer
    c("ru_0058", 0.4)
    o("confbridge-there-are")
    b.cursor += 11.0             # the customer is put on hold
    o("auth-thankyou", 0.0)
    c("ru_0079")
    o("vm-no", -1.0)             # again
    c("ru_0045", 0.5)
    o("pbx-transfer", -1.5)      # and again
    c("ru_0063", 0.6)
    o("privacy-thankyou")
    return b


def en_call(data: Path) -> CallBuilder:
    """Two different English readers (pocketsphinx test speaker, JFK), used as a mono call."""
    ps_dir = data / "asr" / "en_pocketsphinx_testdata"
    fw_dir = data / "asr" / "en_faster_whisper_testdata"
    ps, fw = texts(ps_dir / "transcripts.tsv"), texts(fw_dir / "transcripts.tsv")
    b = CallBuilder(["operator", "customer"])
    for i, key in enumerate(["sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0890",
                             "sense_and_sensibility_01_austen_64kb-0930"]):
        b.say("operator", ps_dir / ps[key]["audio"], ps[key]["text"], 0.0 if i == 0 else 0.7)
        if i == 1:
            b.say("customer", fw_dir / fw["jfk"]["audio"], fw["jfk"]["text"], 0.7)
    return b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    (ROOT / "samples").mkdir(exist_ok=True)
    ru_call(args.data).write("ru_call_stereo")
    en_call(args.data).write("en_call_mono", mono=True)
    src = args.data / "diarization" / "pyannote_sample"
    for name in ("sample.wav", "sample.rttm"):
        shutil.copy(src / name, ROOT / "samples" / f"pyannote_{name}")
    print("wrote", sorted(p.name for p in (ROOT / "samples").iterdir()))


if __name__ == "__main__":
    main()
