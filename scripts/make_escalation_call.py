"""Builds callsense/samples/en_escalation_call.flac: a constructed, synthetic two-party bank call that
shows the hints the product gives (a hold, an operator red flag, a repeat caller, the operator
talking over the customer, a manager request, a complaint threat, a promise, closing the account,
the same request again, sarcasm after a hold). The voices are espeak-ng's (Debian package
espeak-ng): robotic, and honestly labelled as constructed in samples/README.md. Operator on the
left channel, customer on the right. Its reference turns go to en_escalation_call.json.

    python scripts/make_escalation_call.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from callsense.config import SAMPLE_RATE

OUT = Path(__file__).resolve().parent.parent / "callsense" / "samples" / "en_escalation_call"
# (role, text, seconds after the previous turn ends (negative: talk over it), espeak options)
TURNS: list[tuple[str, str, float, list[str]]] = [
    ("operator", "Thank you for calling Harbor Bank, my name is Anna, this call is recorded. How can I help you?", 0.5, []),
    ("customer", "Hi, my name is John. My card payment failed again and I was charged a late fee.", 0.6, []),
    ("operator", "Let me check that for you, please hold.", 0.6, []),
    ("operator", "Thanks for waiting. I can see the fee, but there is nothing more I can do about it.", 14.0, []),
    (
        "customer",
        "This is the third time I am calling about this fee, and every time I get the same answer.",
        0.5,
        ["-a", "170", "-s", "175", "-p", "70"],
    ),
    ("operator", "Sorry, let me stop you there.", -1.2, []),
    (
        "customer",
        "No, you listen. I pay my card on time and your system keeps failing.",
        0.4,
        ["-a", "180", "-s", "180", "-p", "75"],
    ),
    ("operator", "I understand, but the rules are the rules.", -1.0, []),
    ("customer", "I want to speak to your manager right now.", 0.4, ["-a", "190", "-s", "185", "-p", "80"]),
    ("operator", "Sir, one moment.", -0.9, []),
    (
        "customer",
        "If this is not fixed today I am filing a complaint with the regulator.",
        0.4,
        ["-a", "190", "-s", "185", "-p", "80"],
    ),
    ("operator", "I guarantee you will get the fee back today.", 0.6, []),
    (
        "customer",
        "Honestly, I am closing my account and moving my salary to another bank.",
        0.6,
        ["-a", "180", "-s", "175", "-p", "70"],
    ),
    ("operator", "Please hold while I speak to my supervisor.", 0.6, []),
    ("customer", "Great. Just great. Thanks a lot.", 16.0, ["-s", "120"]),
    ("customer", "My card payment failed again and I was charged a late fee.", 0.8, []),
    ("operator", "My supervisor has approved a refund of the fee. Is there anything else I can help with?", 0.6, []),
    ("customer", "No. Goodbye.", 0.6, []),
    ("operator", "Thank you for calling, have a good day.", 0.5, []),
]


def speak(text: str, options: list[str]) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "t.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", *options, "-w", str(wav), text], check=True)
        audio, rate = sf.read(wav, dtype="float32")
    return np.asarray(soxr.resample(audio, rate, SAMPLE_RATE), np.float32)


def main() -> None:
    clips = [speak(text, options) for _, text, _, options in TURNS]
    starts, clock = [], 0.5
    for (_, _, gap, _), clip in zip(TURNS, clips, strict=True):
        start = max(0.0, clock + gap)
        starts.append(start)
        clock = max(clock, start + clip.size / SAMPLE_RATE)
    total = int((clock + 1.0) * SAMPLE_RATE)
    audio = np.zeros((2, total), np.float32)
    turns = []
    for (role, text, _, _), clip, start in zip(TURNS, clips, starts, strict=True):
        ch, a = (0 if role == "operator" else 1), int(start * SAMPLE_RATE)
        audio[ch, a : a + clip.size] += clip * 0.8
        turns.append(
            {"role": role, "start": round(start, 2), "end": round(start + clip.size / SAMPLE_RATE, 2), "text": text}
        )
    sf.write(OUT.with_suffix(".flac"), audio.T, SAMPLE_RATE, subtype="PCM_16")
    OUT.with_suffix(".json").write_text(
        json.dumps({"constructed": "espeak-ng synthetic voices", "turns": turns}, indent=1), encoding="utf-8"
    )
    print(f"{OUT.with_suffix('.flac')}: {total / SAMPLE_RATE:.1f} s, {len(turns)} turns")


if __name__ == "__main__":
    main()
