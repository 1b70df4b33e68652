"""Build the sample calls in samples/ from real recordings in ../shared/data (see samples/README.md).

No sample is synthesised: every second of speech is a real recording; only the timing (who speaks
when, pauses, overlaps) is arranged here, and the reference RTTM and transcripts follow from it.
    .venv/bin/python scripts/make_samples.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from callsense.bench.calls import CallBuilder, texts

ROOT = Path(__file__).resolve().parent.parent


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
    o("vm-press", -1.2)  # operator talks over the customer
    c("ru_0058", 0.4)
    o("confbridge-there-are")
    b.cursor += 11.0  # the customer is put on hold
    o("auth-thankyou", 0.0)
    c("ru_0079")
    o("vm-no", -1.0)  # again
    c("ru_0045", 0.5)
    o("pbx-transfer", -1.5)  # and again
    c("ru_0063", 0.6)
    o("privacy-thankyou")
    return b


def en_call(data: Path) -> CallBuilder:
    """Two different English readers (pocketsphinx test speaker, JFK), used as a mono call."""
    ps_dir = data / "asr" / "en_pocketsphinx_testdata"
    fw_dir = data / "asr" / "en_faster_whisper_testdata"
    ps, fw = texts(ps_dir / "transcripts.tsv"), texts(fw_dir / "transcripts.tsv")
    b = CallBuilder(["operator", "customer"])
    for i, key in enumerate(
        [
            "sense_and_sensibility_01_austen_64kb-0880",
            "sense_and_sensibility_01_austen_64kb-0890",
            "sense_and_sensibility_01_austen_64kb-0930",
        ]
    ):
        b.say("operator", ps_dir / ps[key]["audio"], ps[key]["text"], 0.0 if i == 0 else 0.7)
        if i == 1:
            b.say("customer", fw_dir / fw["jfk"]["audio"], fw["jfk"]["text"], 0.7)
    return b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    (ROOT / "samples").mkdir(exist_ok=True)
    ru_call(args.data).write(ROOT / "samples", "ru_call_stereo")
    en_call(args.data).write(ROOT / "samples", "en_call_mono", mono=True)
    src = args.data / "diarization" / "pyannote_sample"
    for name in ("sample.wav", "sample.rttm"):
        shutil.copy(src / name, ROOT / "samples" / f"pyannote_{name}")
    print("wrote", sorted(p.name for p in (ROOT / "samples").iterdir()))


if __name__ == "__main__":
    main()
