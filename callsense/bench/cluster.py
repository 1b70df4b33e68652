"""`bench --only cluster`: Redis + 1 gateway + 2 workers on this machine, against the one-process
server in the same run (same calls, same settings): calls kept up, what the broker adds to event
delivery, and a kill -9 failover (finals lost or repeated, the gap the consoles see)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from callsense.bench.load import LIVE_CALL, bench_load, kept_up, load_round, rotated_calls
from callsense.config import Settings

TOKEN = "bench"


def bench_cluster(settings: Settings, models: Any, ks: list[int], tmp: Path, path: Path = LIVE_CALL) -> dict[str, Any]:
    from callsense.audio.files import probe
    from callsense.service.cluster import LocalCluster, RedisMissing

    single = bench_load(settings, models, ks, tmp / "single", path)
    config = settings.model_dump(mode="json", exclude={"server": {"store"}, "cluster": {"broker"}})
    config["server"]["tokens"] = {TOKEN: {"role": "supervisor"}}
    cluster = LocalCluster(tmp / "cluster", config, gateways=1, workers=2)
    try:
        cluster.start()
    except RedisMissing as exc:
        return {"error": str(exc)}
    try:
        audio_s = probe(path).duration
        url = cluster.urls[0]
        rounds = {
            str(k): asyncio.run(
                load_round(url, TOKEN, rotated_calls(path, k, tmp / "cluster_calls"), audio_s, f"cluster{k}")
            )
            for k in ks
        }
        delivery = _metrics(url).get("broker_delivery_ms")
        failover = asyncio.run(_failover(cluster, path))
    finally:
        cluster.stop()
    ratio = kept_up(rounds) / max(kept_up(single), 1)
    return {
        "single_process": single,
        "cluster": rounds,
        "calls_kept_up": {"single_process": kept_up(single), "cluster": kept_up(rounds), "ratio": round(ratio, 2)},
        "broker_delivery_ms": delivery,
        "failover": failover,
    }


def _metrics(ws_url: str) -> dict[str, Any]:
    request = urllib.request.Request(
        ws_url.replace("ws://", "http://") + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


async def _watch(url: str, call_id: str) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, event) of one call at a supervisor console, until it ends."""
    import websockets

    seen: list[tuple[float, dict[str, Any]]] = []
    async with websockets.connect(f"{url}/console?token={TOKEN}", max_size=2**22) as ws:
        async for raw in ws:
            ev = json.loads(raw)
            if ev.get("call_id") == call_id:
                seen.append((time.monotonic(), ev))
                if ev["type"] == "call_ended":
                    return seen
    return seen


async def _one_call(url: str, path: Path, call_id: str, kill: Any = None) -> list[tuple[float, dict[str, Any]]]:
    from callsense.service.client import stream_file

    watch = asyncio.create_task(_watch(url, call_id))
    await asyncio.sleep(0.3)
    source = asyncio.create_task(stream_file(path, url, TOKEN, call_id=call_id))
    if kill is not None:
        await kill()
    await source
    return await asyncio.wait_for(watch, 120)


async def _failover(cluster: Any, path: Path) -> dict[str, Any]:
    """The call once undisturbed, once with its worker killed (kill -9) 40% into it."""
    from callsense.audio.files import probe

    url = cluster.urls[0]
    reference = await _one_call(url, path, "failover-ref")
    killed_at: list[float] = []

    async def kill() -> None:
        while not (owner := await asyncio.to_thread(cluster.worker_of, "failover")):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.4 * probe(path).duration)
        cluster.workers[owner].kill()
        killed_at.append(time.monotonic())
        cluster.add_worker(f"{owner}-restarted")  # the cluster gets its capacity back

    events = await _one_call(url, path, "failover", kill)
    expected = {e["utterance_id"] for _, e in reference if e["type"] == "transcript_final"}
    finals = [e["utterance_id"] for _, e in events if e["type"] == "transcript_final"]
    changed = [t for t, e in events if e["type"] == "worker_changed"]
    after_kill = [t for t, _ in events if killed_at and t > killed_at[0]]
    return {
        "finals_expected": len(expected),
        "finals_lost": len(expected - set(finals)),
        "finals_repeated": len(finals) - len(set(finals)),
        "gap_s": round(min(after_kill) - killed_at[0], 2) if after_kill and killed_at else None,
        "worker_changed_after_s": round(changed[0] - killed_at[0], 2) if changed and killed_at else None,
    }
