"""`callsense bench --only soak`: does a server that runs for many calls stay bounded and lose nothing?

100 calls one after another, then two rounds of 4 at once, each streamed as fast as the server takes
it (speed 0: backpressure), with one supervisor console connected throughout. Figures: server RSS
after the first 10 calls and at the end (the goal is within 10%), and the growth from call 10 to 100
and between the two concurrent rounds (several pipelines at once raise the working set once; a leak
keeps raising it); calls kept in memory, and whether every final the store holds reached the console
(the goal is all of them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import soundfile as sf

from callsense.audio.files import read_audio
from callsense.config import SAMPLE_RATE, Settings, TokenGrant
from callsense.registry import Models
from callsense.reports.store import Store
from callsense.service.client import stream_file
from callsense.service.server import CallServer

CLIP_S = 10.0


def _clips(source: Path, tmp: Path) -> list[Path]:
    """Distinct 10 s stretches of a two-party call (not one clip repeated)."""
    audio = read_audio(source)
    n = int(CLIP_S * SAMPLE_RATE)
    out = []
    for i in range(audio.shape[1] // n):
        out.append(tmp / f"soak{i}.flac")
        sf.write(out[-1], audio[:, i * n : (i + 1) * n].T, SAMPLE_RATE)
    return out


def bench_soak(
    settings: Settings, models: Models, source: Path, tmp: Path, sequential: int = 100, concurrent: int = 4
) -> dict[str, Any]:
    settings = settings.model_copy(deep=True)
    settings.server.store = tmp / "soak" / "calls.sqlite"
    settings.server.tokens = {"bench": TokenGrant(role="supervisor")}
    settings.server.resume_window_s = 5.0
    (tmp / "soak").mkdir(parents=True, exist_ok=True)
    clips = _clips(source, tmp / "soak")
    return asyncio.run(_soak(settings, models, clips, sequential, concurrent))


async def _soak(settings: Settings, models: Models, clips: list[Path], sequential: int, concurrent: int) -> dict[str, Any]:
    import websockets

    server = CallServer(settings, models)
    port = await server.start("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{port}"
    finals: dict[str, set[int]] = defaultdict(set)
    delivered_closes: list[int] = []

    async def console() -> None:
        async with websockets.connect(f"{url}/console?token=bench", max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "resume", "after": {}}))
            try:
                async for msg in ws:
                    d = json.loads(msg)
                    if d.get("type") == "transcript_final":
                        finals[d["call_id"]].add(d["seq"])
            except websockets.exceptions.ConnectionClosed as exc:
                delivered_closes.append(exc.rcvd.code if exc.rcvd else 0)

    watcher = asyncio.create_task(console())
    await asyncio.sleep(0.2)
    proc = psutil.Process()
    rss: dict[str, float] = {}
    unclean: list[str] = []
    t0 = time.monotonic()
    ids: list[str] = []
    for i in range(sequential):
        result = await stream_file(clips[i % len(clips)], url, "bench", speed=0, call_id=f"soak-{i}")
        ids.append(result["call_id"])
        if not result["clean"]:
            unclean.append(result["call_id"])
        if i + 1 == 10:
            rss["after_10_calls_mb"] = proc.memory_info().rss / 2**20
    rss[f"after_{sequential}_calls_mb"] = proc.memory_info().rss / 2**20
    # two rounds of concurrent calls: the first raises the working set (several pipelines at once),
    # the second shows whether it keeps rising
    for round_ in ("after_concurrent_mb", "end_mb"):
        results = await asyncio.gather(
            *(
                stream_file(clips[i % len(clips)], url, "bench", speed=0, call_id=f"soak-{round_[:3]}{i}")
                for i in range(concurrent)
            )
        )
        ids += [r["call_id"] for r in results]
        unclean += [r["call_id"] for r in results if not r["clean"]]
        await asyncio.sleep(1.0)
        rss[round_] = proc.memory_info().rss / 2**20
    wall = time.monotonic() - t0
    in_memory = {"rooms": len(server.fanout.rooms), "calls": len(server.calls)}
    watcher.cancel()
    await server.shutdown()
    store = Store(settings.server.store)
    stored = {cid: {e.seq for e in store.events(cid) if e.type == "transcript_final"} for cid in ids}
    missing = sum(len(seqs - finals[cid]) for cid, seqs in stored.items())
    growth = (rss["end_mb"] - rss["after_10_calls_mb"]) / rss["after_10_calls_mb"]
    sequential_growth = (rss[f"after_{sequential}_calls_mb"] - rss["after_10_calls_mb"]) / rss["after_10_calls_mb"]
    concurrent_growth = (rss["end_mb"] - rss["after_concurrent_mb"]) / rss["after_concurrent_mb"]
    return {
        "calls": len(ids),
        "audio_h": round(len(ids) * CLIP_S / 3600, 3),
        "wall_s": round(wall, 1),
        **{k: round(v) for k, v in rss.items()},
        "rss_growth_after_10": round(growth, 3),
        "rss_growth_sequential": round(sequential_growth, 3),
        "rss_growth_concurrent_round_2": round(concurrent_growth, 3),
        "rss_within_10pct": abs(growth) <= 0.10,
        "finals_stored": sum(len(s) for s in stored.values()),
        "finals_missing_at_console": missing,
        "unclean_calls": len(unclean),
        "left_in_memory": in_memory,
    }
