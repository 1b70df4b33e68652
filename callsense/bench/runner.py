"""`callsense bench`: every figure the product promises, measured in one run on this machine.

Baselines run in the same process and the same run (offline faster-whisper beside the streaming
path, pyannote's offline pipeline beside the streaming diarizer, VADER beside the text heads), so a
noisy machine cannot fake a ratio. `--data DIR` takes any folder with the layout of ../shared/data.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from callsense.bench.audit import bench_audit
from callsense.bench.cluster import bench_cluster
from callsense.bench.hints import bench_hints
from callsense.bench.load import LIVE_CALL, bench_load
from callsense.bench.privacy import bench_privacy
from callsense.bench.soak import bench_soak
from callsense.bench.wer import normalize
from callsense.bench.wholecall import bench_wholecall
from callsense.config import Settings

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


class PeakMemory:
    """Samples this process's resident memory in the background; `.peak_mb` after the block."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def __enter__(self) -> PeakMemory:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


# --- ASR ------------------------------------------------------------------------------------------


def bench_asr(data: Path, settings: Settings, models: Any, per_set: int | None) -> dict[str, Any]:
    from callsense.audio.codecs import decode_pcm, encode_mulaw
    from callsense.audio.files import read_audio
    from callsense.bench.datasets import asr_items
    from callsense.stages.transcription import StreamingTranscriber
    from callsense.stages.whisper import WhisperDecoder

    whisper = models.whisper
    beam = settings.profiles.live.beam_size
    decoder = WhisperDecoder(whisper, settings.asr, beam_size=beam)
    by_set: dict[str, list] = defaultdict(list)
    for item in asr_items(data):
        by_set[item.set].append(item)
    out: dict[str, Any] = {}
    for name, items in sorted(by_set.items()):
        items = items[:per_set] if per_set else items
        refs, stream_hyp, offline_hyp, phone_hyp = [], [], [], []
        audio_s = stream_s = offline_s = 0.0
        for item in items:
            audio = read_audio(item.path)
            mono = audio[{"left": 0, "right": 1}.get(item.channel, 0)] if audio.shape[0] > 1 else audio[0]
            audio_s += mono.size / 16000
            refs.append(normalize(item.text))
            t0 = time.perf_counter()
            tr = StreamingTranscriber(decoder, settings.asr, "b")
            finals = []
            for i in range(0, mono.size, 1600):
                finals += [e for e in tr.push(mono[i : i + 1600]) if e.type == "transcript_final"]
            finals += [e for e in tr.flush() if e.type == "transcript_final"]
            stream_s += time.perf_counter() - t0
            stream_hyp.append(normalize(" ".join(f.text for f in finals)))
            t0 = time.perf_counter()
            segs, _ = whisper.transcribe(mono, beam_size=beam, vad_filter=True, condition_on_previous_text=False)
            offline_hyp.append(normalize(" ".join(s.text for s in segs)))
            offline_s += time.perf_counter() - t0
            if name == "ru_read_msu":  # what the telephone channel costs: 8 kHz mu-law and back
                import soxr

                phone = decode_pcm(encode_mulaw(soxr.resample(mono, 16000, 8000)), "mulaw")[0]
                segs, _ = whisper.transcribe(
                    soxr.resample(phone, 8000, 16000),
                    beam_size=beam,
                    vad_filter=True,
                    condition_on_previous_text=False,
                )
                phone_hyp.append(normalize(" ".join(s.text for s in segs)))
        row = {
            "items": len(items),
            "audio_s": round(audio_s, 1),
            "wer_streaming": round(jiwer.wer(refs, stream_hyp), 4),
            "wer_offline": round(jiwer.wer(refs, offline_hyp), 4),
            "rtf_streaming": round(stream_s / audio_s, 3),
            "rtf_offline": round(offline_s / audio_s, 3),
        }
        if phone_hyp:
            row["wer_offline_8k_mulaw"] = round(jiwer.wer(refs, phone_hyp), 4)
        out[name] = row
    return out


# --- live latency ---------------------------------------------------------------------------------


def bench_live(settings: Settings, models: Any, path: Path = LIVE_CALL) -> dict[str, Any]:
    """Feed a sample call in real time; latency from the end of each reference turn to its events."""
    from callsense.audio.files import FileSource
    from callsense.pipeline import CallPipeline, warm_up

    ref = json.loads(path.with_suffix(".json").read_text())["turns"]
    warm_up(models, settings)  # a live server loads models before calls arrive
    pipe = CallPipeline(settings, models, ["operator", "customer"], source="bench")
    seen: list[tuple[float, Any]] = []
    t0 = time.monotonic()
    with PeakMemory() as mem:
        pipe.run(
            FileSource(path, chunk_ms=settings.chunk_ms, realtime=True), lambda ev: seen.append((time.monotonic() - t0, ev))
        )
    lat: dict[str, list[float]] = defaultdict(list)
    # latency is the live finals'; revisions come later by design (a pack of the speaker's turns)
    live = [(wall, ev) for wall, ev in seen if not getattr(ev, "revision", 0)]
    revised = len(seen) - len(live)
    seen = live
    finals = {ev.utterance_id: ev for _, ev in seen if ev.type == "transcript_final"}
    for wall, ev in seen:
        if ev.type == "transcript_final":
            target = ev
        elif ev.type == "emotion":
            target = finals.get(ev.utterance_id)
        elif ev.type == "hint" and "utterance_id" in ev.evidence:
            target = finals.get(ev.evidence["utterance_id"])
        elif ev.type == "hint" and "to" in ev.evidence:  # silence: the turn that broke it
            target = next((f for f in finals.values() if abs(f.start - ev.evidence["to"]) < 0.01), None)
        else:
            continue
        if target is None:
            continue
        ends = [t["end"] for t in ref if t["role"] == target.role and t["start"] < target.end and t["end"] > target.start]
        if ends:
            lat[ev.type].append(wall - max(ends))
    metrics = [ev for _, ev in seen if ev.type == "metrics"]
    scoring = [ev.evidence.get("scoring_ms", 0.0) for _, ev in seen if ev.type == "emotion"]
    return {
        "call": path.name,
        "audio_s": round(pipe.stream_time, 1),
        **{f"{k}_latency_p50_s": pct(v, 50) for k, v in lat.items()},
        **{f"{k}_latency_p95_s": pct(v, 95) for k, v in lat.items()},
        "revised_finals": revised,
        "max_lag_s": max((m.lag_s for m in metrics), default=None),
        "shed": any(m.shedding for m in metrics),
        "rtf": round(pipe.timing.busy_s() / pipe.stream_time, 3),
        "stage_rtf": {k: round(v / pipe.stream_time, 3) for k, v in pipe.timing.total.items()},
        "emotion_scoring_ms_p50": pct(scoring, 50),
        "emotion_scoring_ms_p95": pct(scoring, 95),
        "peak_rss_mb": mem.peak_mb,
    }


# --- diarization ----------------------------------------------------------------------------------


def bench_diarization(data: Path, settings: Settings, models: Any) -> dict[str, Any]:
    from pyannote.metrics.diarization import DiarizationErrorRate

    from callsense.audio.files import read_audio
    from callsense.stages.diarization import OfflineDiarizer, StreamingDiarizer, read_rttm

    files = sorted((data / "diarization").glob("*/*.rttm")) + sorted(SAMPLES.glob("*_mono.rttm"))
    offline = OfflineDiarizer(settings.models, settings.diarization)
    out = {}
    for rttm in files:
        wav = next((p for p in rttm.parent.glob(rttm.stem + ".*") if p.suffix in (".wav", ".flac")), None)
        if wav is None:
            continue
        ref = read_rttm(rttm)
        audio = read_audio(wav).mean(axis=0)
        dur = audio.size / 16000
        t0 = time.perf_counter()
        hyp_off = offline(audio, num_speakers=len(ref.labels()))
        off_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        st = StreamingDiarizer(settings.models, settings.diarization, models.segmentation, models.embedding)
        for i in range(0, audio.size, 1600):
            st.push(audio[i : i + 1600])
        st.flush()
        st_s = time.perf_counter() - t0
        row: dict[str, Any] = {"audio_s": round(dur, 1)}
        for collar in (0.0, 0.25):
            row[f"der_pyannote_offline_c{collar}"] = round(float(DiarizationErrorRate(collar=collar)(ref, hyp_off)), 4)
            row[f"der_streaming_c{collar}"] = round(float(DiarizationErrorRate(collar=collar)(ref, st.annotation)), 4)
        row.update(
            rtf_pyannote_offline=round(off_s / dur, 3),
            rtf_streaming=round(st_s / dur, 3),
            rtf_streaming_own_process=_diarize_alone(wav),
            speakers_streaming=len(st.annotation.labels()),
        )
        out[rttm.parent.name + "/" + rttm.stem] = row
    return out


_ALONE = """
import sys, time, warnings
warnings.filterwarnings("ignore")
from callsense.config import load_settings
from callsense.stages.diarization import StreamingDiarizer
from callsense.audio.files import read_audio
s = load_settings(); audio = read_audio(sys.argv[1]).mean(axis=0)
d = StreamingDiarizer(s.models, s.diarization)
t0 = time.perf_counter()
for i in range(0, audio.size, 1600):
    d.push(audio[i : i + 1600])
d.flush()
print((time.perf_counter() - t0) / (audio.size / 16000))
"""


def _diarize_alone(wav: Path) -> float | None:
    """The streaming diarizer in a process of its own (no Whisper loaded): the contention check."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _ALONE, str(wav)], capture_output=True, text=True, timeout=600)
    try:
        return round(float(proc.stdout.strip().splitlines()[-1]), 3)
    except (ValueError, IndexError):
        return None


# --- emotion --------------------------------------------------------------------------------------


def bench_text(data: Path, settings: Settings, models: Any, limit: int | None) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    from callsense.bench.datasets import text_items

    dev = [i for i in text_items(data) if i.split == "dev"]
    if limit:
        import random

        random.Random(0).shuffle(dev)
        dev = dev[:limit]
    model = models.text_emotion
    scores = model.score([i.text for i in dev])
    out: dict[str, Any] = {"items": len(dev)}
    for task in ("sentiment", "emotion"):
        for lang in ("ru", "en"):
            idx = [k for k, i in enumerate(dev) if getattr(i, task) and i.lang == lang]
            if not idx:
                continue
            pred = [max(getattr(scores[k], task), key=getattr(scores[k], task).get) for k in idx]
            out[f"{task}_{lang}_macro_f1"] = round(f1_score([getattr(dev[k], task) for k in idx], pred, average="macro"), 3)
    idx = [k for k, i in enumerate(dev) if i.sentiment and i.lang == "en"]
    try:
        from callsense.stages.text_emotion import vader_labels

        vader = vader_labels([dev[k].text for k in idx])
        out["sentiment_en_vader_macro_f1"] = round(f1_score([dev[k].sentiment for k in idx], vader, average="macro"), 3)
    except ImportError:
        out["sentiment_en_vader_macro_f1"] = "vaderSentiment not installed"
    return out


def bench_speech_emotion(data: Path, models: Any) -> dict[str, Any]:
    """Unweighted accuracy of the shipped speech model, each speaker normalised against themselves.
    On ../shared/data this is the training set (see docs/speech_emotion_eval.json for the
    leave-one-speaker-out figure); on a --data folder of other recordings it is a held-out test."""
    from sklearn.metrics import recall_score

    from callsense.audio.files import read_audio
    from callsense.bench.datasets import EMODB_TO, HIGH_AROUSAL, emotion_speech
    from callsense.stages.prosody import features, speaker_z, vector

    model = models.speech_emotion
    rows = []
    for item in emotion_speech(data):
        if item.emotion not in EMODB_TO or item.emotion == "disgust":
            continue
        f = features(read_audio(item.path)[0])
        if f is not None:
            rows.append((item.speaker, item.emotion, vector(f)))
    if not rows:
        return {"items": 0}
    preds, golds, a_pred, a_gold = [], [], [], []
    z_all = speaker_z(np.vstack([r[2] for r in rows]), np.array([r[0] for r in rows]))
    for (_, emo, _), zi in zip(rows, z_all, strict=True):
        s = model.predict_z(zi)
        preds.append(max(s.emotion, key=s.emotion.get))
        golds.append(EMODB_TO[emo])
        a_pred.append(s.arousal > 0)
        a_gold.append(emo in HIGH_AROUSAL)
    labels = sorted(set(golds))
    per_class = recall_score(golds, preds, labels=labels, average=None)
    return {
        "items": len(rows),
        "emotion_unweighted_accuracy": round(float(np.mean(per_class)), 3),
        "recall_per_class": {lbl: round(float(r), 3) for lbl, r in zip(labels, per_class, strict=True)},
        "arousal_unweighted_accuracy": round(float(recall_score(a_gold, a_pred, average="macro")), 3),
    }


# --- driver ------------------------------------------------------------------------------------------


def run_bench(settings: Settings, data: Path, quick: bool, json_path: Path | None, only: list[str] | None) -> dict:
    import tempfile

    from callsense.registry import Models

    console = Console(width=None if sys.stdout.isatty() else 160)
    models = Models(settings)
    cpus, ram = psutil.cpu_count(), round(psutil.virtual_memory().total / 2**30)
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "data": str(data),
        "machine": {"cpus": cpus, "ram_gb": ram},
    }
    tmp = Path(tempfile.mkdtemp(prefix="callsense-bench-"))
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("asr", lambda: bench_asr(data, settings, models, 6 if quick else None)),
        ("live", lambda: bench_live(settings, models)),
        ("diarization", lambda: bench_diarization(data, settings, models)),
        ("text_emotion", lambda: bench_text(data, settings, models, 600 if quick else None)),
        ("speech_emotion", lambda: bench_speech_emotion(data, models)),
        ("load", lambda: bench_load(settings, models, [1, 2] if quick else [1, 2, 4, 6, 8], tmp, mono=None if quick else 3)),
        ("audit", lambda: bench_audit(settings, data, [1] if quick else [1, 2], tmp, 2 if quick else 4)),
        ("privacy", lambda: bench_privacy(data)),
        ("hints", lambda: bench_hints(settings, models, data)),
        ("soak", lambda: bench_soak(settings, models, LIVE_CALL, tmp, 20 if quick else 100)),
        ("wholecall", lambda: bench_wholecall(data, settings, models, 2 if quick else 4)),
        ("cluster", lambda: bench_cluster(settings, models, [2, 4] if quick else [2, 4, 6], tmp)),
    ]
    for name, fn in steps:
        if only and name not in only:
            continue
        with console.status(f"bench: {name}\u2026"):
            t0 = time.perf_counter()
            try:
                results[name] = fn()
            except Exception as exc:  # one failing figure must not hide the others
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            console.print(f"[dim]{name} took {time.perf_counter() - t0:.0f} s[/dim]")
        _print(console, name, results[name])
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
        console.print(f"figures written to {json_path}")
    return results


def _print(console: Console, name: str, block: Any) -> None:
    table = Table(title=name, title_justify="left")
    if isinstance(block, dict) and block and all(isinstance(v, dict) for v in block.values()):
        cols = sorted(
            {k for v in block.values() for k in v},
            key=lambda c: list(next(iter(block.values()))).index(c) if c in next(iter(block.values())) else 99,
        )
        table.add_column("")
        for c in cols:
            table.add_column(c, overflow="fold")
        for key, row in block.items():
            table.add_row(key, *[_fmt(row.get(c)) for c in cols])
    else:
        table.add_column("figure")
        table.add_column("value", overflow="fold")
        for k, v in block.items() if isinstance(block, dict) else [("value", block)]:
            table.add_row(k, _fmt(v))
    console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    return "" if v is None else str(v)


def main_bench(settings: Settings, data: Path, quick: bool, json_path: Path | None, only: list[str] | None) -> int:
    if not data.exists():
        raise SystemExit(f"data folder {data} not found; pass --data DIR (layout of ../shared/data)")
    run_bench(settings, data, quick, json_path, only)
    return 0
