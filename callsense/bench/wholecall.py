"""Whole-call WER: streaming finals against offline faster-whisper over each whole channel.

Single utterances hide what a call does to streaming recognition (short turns cut by the VAD, no
context, telephone audio), so this block scores whole two-party calls, per channel: the live
pipeline's finals against faster-whisper with beam 5 over the whole channel (its own VAD and
conditioning on previous text), same run, same model. Calls: `samples/ru_call_stereo.flac` and
calls constructed here from the data folder (real Russian speech: short Asterisk prompts and read
sentences for the operator, read sentences for the customer, none the sample uses; each channel
through 8 kHz mu-law and back, as a telephone line delivers it), and the Harper Valley dev calls
with audio (real voices on real 8 kHz lines, English, scored against their human transcripts).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from callsense.bench.calls import CallBuilder, texts
from callsense.bench.wer import normalize
from callsense.config import Settings

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "ru_call_stereo.flac"
ROLES = ["operator", "customer"]
TURNS = 6  # per party and call
NOT_SPEECH = {"non_speech_silence", "parenthetical_note_check_audio"}  # flags in ru_phone_prompts


def telephone(audio: np.ndarray) -> np.ndarray:
    """Each channel through 8 kHz mu-law and back to 16 kHz."""
    import soxr

    from callsense.audio.codecs import decode_pcm, encode_mulaw

    return np.stack(
        [
            soxr.resample(decode_pcm(encode_mulaw(soxr.resample(ch, 16000, 8000)), "mulaw")[0], 8000, 16000)[
                : audio.shape[1]
            ]
            for ch in audio
        ]
    ).astype(np.float32)


def constructed_calls(data: Path, n: int, seed: int = 7) -> list[CallBuilder]:
    """Two-party Russian calls from real speech: the operator alternates short Asterisk prompts
    (one word: "Спасибо", digits) with read sentences, the customer reads sentences; no sentence is
    used twice or taken from the sample call."""
    op_dir, cu_dir = data / "asr" / "ru_phone_prompts", data / "asr" / "ru_read_msu"
    sample_ids = {Path(t["source"]).stem for t in json.loads(SAMPLE.with_suffix(".json").read_text())["turns"]}
    prompts = sorted(
        (r for r in texts(op_dir / "transcripts.tsv").values() if r.get("flag") not in NOT_SPEECH and r["text"].strip()),
        key=lambda r: r["id"],
    )
    readings = sorted(
        (r for r in texts(cu_dir / "transcripts.tsv").values() if r["id"] not in sample_ids), key=lambda r: r["id"]
    )
    rng = random.Random(seed)
    rng.shuffle(prompts)
    rng.shuffle(readings)
    per_call = TURNS + TURNS // 2
    calls = []
    for i in range(min(n, len(readings) // per_call)):
        mine = iter(readings[i * per_call : (i + 1) * per_call])
        b = CallBuilder(ROLES)
        for j in range(TURNS):
            op = prompts[(i * TURNS + j) % len(prompts)] if j % 2 == 0 else next(mine)
            b.say("operator", (op_dir if j % 2 == 0 else cu_dir) / op["audio"], op["text"], 0.0 if j == 0 else 0.6)
            cu = next(mine)
            b.say("customer", cu_dir / cu["audio"], cu["text"], 0.6)
        calls.append(b)
    return calls


def _streaming(audio: np.ndarray, settings: Settings, models: Any) -> list[str]:
    from callsense.audio.codecs import AudioChunk
    from callsense.pipeline import CallPipeline

    pipe = CallPipeline(settings, models, list(ROLES))
    step = settings.chunk_ms * 16
    events = pipe.run(AudioChunk(audio[:, i : i + step], i / 16000) for i in range(0, audio.shape[1], step))
    finals = sorted((e for e in events if e.type == "transcript_final"), key=lambda e: e.start)
    return [" ".join(f.text for f in finals if f.role == role) for role in ROLES]


def _offline(audio: np.ndarray, models: Any) -> list[str]:
    out = []
    for ch in audio:
        segments, _ = models.whisper.transcribe(ch, beam_size=5, vad_filter=True)
        out.append(" ".join(s.text.strip() for s in segments))
    return out


def _score(refs: list[str], stream: list[str], offline: list[str]) -> dict[str, Any]:
    r = [normalize(x) for x in refs]
    ws, wo = jiwer.wer(r, [normalize(x) for x in stream]), jiwer.wer(r, [normalize(x) for x in offline])
    return {"wer_streaming": round(ws, 4), "wer_offline_beam5": round(wo, 4), "ratio": round(ws / wo, 2) if wo else None}


def bench_wholecall(data: Path, settings: Settings, models: Any, n_calls: int = 4) -> dict[str, Any]:
    from callsense.audio.files import read_audio
    from callsense.bench.datasets import harper_valley_calls, harper_valley_reference

    sample_refs = json.loads(SAMPLE.with_suffix(".json").read_text())["turns"]
    sets: dict[str, list[tuple[np.ndarray, list[str]]]] = {
        "ru_call_stereo (sample)": [
            (read_audio(SAMPLE), [" ".join(t["text"] for t in sample_refs if t["role"] == role) for role in ROLES])
        ],
        "constructed ru calls, telephone": [
            (telephone(b.render()), [b.reference(role) for role in ROLES]) for b in constructed_calls(data, n_calls)
        ],
        "Harper Valley en calls, real voices": [
            (audio, [harper_valley_reference(call, side) for side in ("agent", "caller")])
            for call, audio in harper_valley_calls(data)
        ],
    }
    out: dict[str, Any] = {}
    for name, calls in sets.items():
        if not calls:
            continue  # a data folder without that set
        refs, stream, offline = [], [], []
        t0, audio_s = time.perf_counter(), 0.0
        for audio, ref in calls:
            audio_s += audio.shape[1] / 16000
            refs += ref
            stream += _streaming(audio, settings, models)
            offline += _offline(audio, models)
        out[name] = {
            "calls": len(calls),
            "audio_s": round(audio_s, 1),
            **_score(refs, stream, offline),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    return out
