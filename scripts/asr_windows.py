"""Live-path finals on ru_read_msu with a given encoder window for finals (docs/benchmarks.md › Speech recognition).

.venv/bin/python scripts/asr_windows.py --data ../shared/data --window 15      # WER over all 81
.venv/bin/python scripts/asr_windows.py --data ../shared/data --timing         # decode time per window/beam
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jiwer
import numpy as np

from callsense.audio.files import read_audio
from callsense.bench.datasets import asr_items
from callsense.bench.wer import normalize
from callsense.config import load_settings
from callsense.registry import Models
from callsense.stages.transcription import StreamingTranscriber
from callsense.stages.whisper import DecodeRequest, WhisperDecoder


def wer_of_finals(data: Path, window: float) -> None:
    settings = load_settings()
    settings.asr.final_window_s = window
    decoder = WhisperDecoder(Models(settings).whisper, settings.asr)
    items = [i for i in asr_items(data) if i.set == "ru_read_msu"]
    refs, hyps, audio_s, t0 = [], [], 0.0, time.perf_counter()
    for item in items:
        audio = read_audio(item.path)[0]
        audio_s += audio.size / 16000
        tr = StreamingTranscriber(decoder, settings.asr, "b")
        tr.set_partials(False)
        finals = [e for i in range(0, audio.size, 1600) for e in tr.push(audio[i : i + 1600])] + tr.flush()
        refs.append(normalize(item.text))
        hyps.append(normalize(" ".join(f.text for f in finals if f.type == "transcript_final")))
    print(
        f"ru_read_msu {len(items)} items, window {window} s: WER {jiwer.wer(refs, hyps):.4f}, "
        f"RTF {(time.perf_counter() - t0) / audio_s:.3f}"
    )


def timing(data: Path) -> None:
    settings = load_settings()
    whisper = Models(settings).whisper
    items = [i for i in asr_items(data) if i.set == "ru_read_msu"][20:44]
    clips = [read_audio(i.path)[0] for i in items]
    refs = [normalize(i.text) for i in items]
    for beam, window in [(5, 0.0), (5, 20.0), (5, 15.0), (3, 0.0), (1, 0.0)]:
        decoder = WhisperDecoder(whisper, settings.asr.model_copy(update={"final_window_s": window}), beam_size=beam)
        hyps, took = [], []
        for clip in clips:
            t0 = time.perf_counter()
            hyps.append(normalize(decoder.decode_batch([DecodeRequest(clip, "ru")])[0].text))
            took.append(time.perf_counter() - t0)
        print(
            f"beam {beam}, window {window or 30} s: WER {jiwer.wer(refs, hyps):.3f}, "
            f"decode mean {np.mean(took):.2f} s, p95 {np.percentile(took, 95):.2f} s"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--window", type=float, default=15.0, help="encoder window for finals, s (0 = 30 s)")
    ap.add_argument("--timing", action="store_true", help="decode time of 24 utterances per window and beam")
    args = ap.parse_args()
    timing(args.data) if args.timing else wer_of_finals(args.data, args.window)
