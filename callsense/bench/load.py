"""Concurrent live calls: how many does one machine keep up with? Shared by the one-process `load`
block and the `cluster` block (the same rounds against a gateway)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from callsense.config import Settings, TokenGrant
from callsense.stages.decode_gate import BatchStats

LIVE_CALL = Path(__file__).resolve().parent.parent / "samples" / "ru_call_stereo.flac"
MONO_CALL = LIVE_CALL.with_name("en_call_mono.flac")
KEEP_UP_S = 5.0  # a call keeps up when its lag stays under this and it ends within this of its audio


def rotated_calls(path: Path, k: int, folder: Path) -> list[Path]:
    """K calls from one recording, call i rotated by i/K of its length: all run for the whole time,
    each at a different point of its conversation, as real concurrent calls are (K copies in
    lockstep would end every utterance at the same instant, a burst no call centre produces)."""
    import soundfile as sf

    from callsense.audio.files import read_audio

    audio = read_audio(path)
    folder.mkdir(parents=True, exist_ok=True)
    calls = []
    for i in range(k):
        calls.append(folder / f"call{i}of{k}.flac")
        sf.write(calls[-1], np.roll(audio, -i * audio.shape[1] // k, axis=1).T, 16000)
    return calls


async def load_round(url: str, token: str, calls: list[Path], audio_s: float, tag: str) -> dict[str, Any]:
    """Streams `calls` at once in real time to `url` and watches them on a supervisor console."""
    import websockets

    from callsense.service.client import stream_file

    k = len(calls)
    latencies: list[float] = []
    ended: list[float] = []
    lags: dict[str, float] = defaultdict(float)
    skipped = [0]

    async def watch() -> None:
        async with websockets.connect(f"{url}/console?token={token}", max_size=2**22) as ws:
            async for msg in ws:
                d = json.loads(msg)
                if not str(d.get("call_id", "")).startswith(tag):
                    continue
                if d.get("type") == "metrics":
                    lags[d["call_id"]] = max(lags[d["call_id"]], d["lag_s"])
                    skipped[0] = max(skipped[0], d.get("optional_decodes_skipped", 0))
                if d.get("type") in ("transcript_final", "emotion", "hint") and not d.get("revision"):
                    latencies.append(time.time() - d["wall"])
                if d.get("type") == "call_ended":
                    ended.append(time.monotonic())

    watcher = asyncio.create_task(watch())
    psutil.cpu_percent()
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    results = await asyncio.gather(*(stream_file(call, url, token, call_id=f"{tag}-{i}") for i, call in enumerate(calls)))
    refused = sum(not r["clean"] for r in results)
    deadline = time.monotonic() + 60
    while len(ended) < k - refused and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    wall = max(ended, default=time.monotonic()) - t0  # the last call's end event reached the console
    cpu = psutil.cpu_percent() / 100 * (psutil.cpu_count() or 1)
    watcher.cancel()
    max_lag = max(lags.values(), default=0.0)
    kept = not refused and max_lag < KEEP_UP_S and wall - audio_s < KEEP_UP_S
    return {
        "calls": k,
        "refused": refused,
        "max_lag_s": round(max_lag, 2),
        "finish_delay_s": round(wall - audio_s, 1),
        "kept_up": kept,
        "event_delivery_p95_s": _p95(latencies),
        "cpu_cores_used": round(cpu, 2),
        "optional_decodes_skipped": skipped[0],
        "wall_s": round(wall, 1),
        "max_lag_by_call_s": {cid.removeprefix(f"{tag}-"): round(v, 2) for cid, v in sorted(lags.items())},
    }


def _p95(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 95)), 3) if values else None


def kept_up(rounds: dict[str, dict[str, Any]]) -> int:
    """The most concurrent calls kept up (0 if none)."""
    return max((r["calls"] for r in rounds.values() if r.get("kept_up")), default=0)


def bench_load(
    settings: Settings, models: Any, ks: list[int], tmp: Path, path: Path = LIVE_CALL, mono: int | None = None
) -> dict[str, Any]:
    """K calls streamed at once in real time through one `callsense serve` process; with `mono`, one
    more round: the mono sample call (diarized) beside `mono` stereo calls."""
    from callsense.audio.files import probe
    from callsense.service.server import CallServer

    settings = settings.model_copy(deep=True)
    settings.server.store = tmp / "load" / "calls.sqlite"
    settings.server.tokens = {"bench": TokenGrant(role="supervisor")}
    audio_s = probe(path).duration
    rounds = {str(k): rotated_calls(path, k, tmp / "load") for k in ks}
    if mono is not None:  # a mono call (diarized) beside stereo ones
        rounds[f"1 mono + {mono}"] = [MONO_CALL, *rotated_calls(path, mono, tmp / "load")]
    out = {}
    for i, (name, calls) in enumerate(rounds.items()):
        gate = models.decode_gate
        gate.skipped, gate.stats = 0, BatchStats()
        before = models.revisions.as_dict()

        async def run(calls: list[Path] = calls, tag: str = f"load{i}") -> dict[str, Any]:
            server = CallServer(settings, models)
            port = await server.start("127.0.0.1", 0)
            result = await load_round(f"ws://127.0.0.1:{port}", "bench", calls, audio_s, tag)
            result["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20)
            await server.shutdown()
            return result

        out[name] = {
            **asyncio.run(run()),
            **_batching(gate.stats),
            "revision_packs": {k: v - before[k] for k, v in models.revisions.as_dict().items()},
        }
    return out


def _batching(stats: BatchStats) -> dict[str, Any]:
    """How finals met in the decode gate: batch sizes and the oldest final's wait for company."""
    return {
        "final_batches": stats.batches,
        "finals_per_batch": round(stats.items / max(stats.batches, 1), 2),
        "batch_wait_p95_ms": round(float(np.percentile(stats.waited_s, 95)) * 1000) if stats.waited_s else None,
    }
