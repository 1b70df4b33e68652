"""`callsense demo` (`make demo`): a sample call streamed in real time through the whole live path.

It starts the server on loopback, streams the sample over the plain ingest protocol exactly as
`callsense stream` would, and shows the operator console - all three over real websockets.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.panel import Panel

from callsense.config import Settings, TokenGrant, data_dir
from callsense.events import TranscriptFinal, parse_event
from callsense.reports.store import Store
from callsense.service.console import ConsoleView

QUIET_S = 0.5  # after the call is saved: console events still on their way

if TYPE_CHECKING:
    from callsense.service.cluster import LocalCluster


async def _demo(settings: Settings, path: Path, speed: float, port: int) -> int:
    import websockets

    from callsense.service.server import CallServer

    console = Console()
    server = CallServer(settings)
    with console.status("loading models (Whisper base, emotion models)\u2026"):
        port = await server.start("127.0.0.1", port)
    url = f"ws://127.0.0.1:{port}"
    token = next((t for t, g in settings.server.tokens.items() if g.role == "supervisor"), "")
    # the address works as printed: the supervisor token is in it
    console.print(
        f"server on {url}  \u2022  web dashboard: http://127.0.0.1:{port}/?token={token}  \u2022  "
        f"streaming {path.name} (a constructed call, see samples/README.md) at {speed:g}x"
    )
    from callsense.service.client import stream_file

    # the console is the call's own operator's (the raw view); the dashboard address is a supervisor's
    operator = next(
        ((t, g.operator_id) for t, g in settings.server.tokens.items() if g.role == "operator" and g.operator_id),
        (token, "op-001"),
    )
    view = ConsoleView()
    corrected = 0  # turns revised after the call ended (its last packs are decoded after `call_ended`)

    async def show(ws: Any, live: Live) -> None:
        nonlocal corrected
        async for message in ws:
            data = json.loads(message)
            if data.get("type") == "notice":
                continue
            ev = parse_event(data)
            corrected += int(view.ended and isinstance(ev, TranscriptFinal) and ev.revision == 1)
            view.apply(ev)
            live.update(view.render(min(console.size.height, 30)))

    async with websockets.connect(f"{url}/console?token={operator[0]}") as ws:
        await ws.send(json.dumps({"type": "resume", "after": {}}))
        with Live(view.render(min(console.size.height, 30)), console=console, refresh_per_second=8) as live:
            shown = asyncio.create_task(show(ws, live))
            try:
                # the source's `ended` comes once the call is saved, its last revisions included;
                # they were published before it, so a moment more shows them all
                result = await stream_file(path, url, token, speed=speed, operator_id=operator[1])
                await asyncio.sleep(QUIET_S)
            finally:
                shown.cancel()
    await server.shutdown()
    report = Store(settings.server.store).call_dir("reports", result["call_id"]) / "report.html"
    if corrected:
        console.print(f"{corrected} turn(s) corrected after the call: decoded again among the speaker's other turns")
    console.print(f"call ended. Quality report: [bold]{report}[/bold]")
    summary = report.with_name("report.json")
    if summary.exists():  # what the operator would paste into the ticket
        text = (json.loads(summary.read_text(encoding="utf-8")).get("summary") or {}).get("text")
        if text:
            console.print(Panel(text, title="summary for the ticket", expand=False))
    for err in result["errors"]:
        console.print(f"[yellow]warning:[/yellow] {err}")
    return 0


def _demo_tokens(settings: Settings) -> None:
    """A config without a supervisor and an operator token gets one-time ones for this run (loopback only):
    the demo needs both, and a user's own config need not list any."""
    import secrets

    roles = {g.role for g in settings.server.tokens.values()}
    if "supervisor" not in roles:
        settings.server.tokens[f"demo-sup-{secrets.token_urlsafe(8)}"] = TokenGrant(role="supervisor")
    if not any(g.role == "operator" and g.operator_id for g in settings.server.tokens.values()):
        grant = TokenGrant(role="operator", operator_id="op-001")
        settings.server.tokens[f"demo-op-{secrets.token_urlsafe(8)}"] = grant


def _is_stereo(path: Path) -> bool:
    from callsense.audio.codecs import AudioError
    from callsense.audio.files import probe

    try:
        return probe(path).channels >= 2
    except AudioError:  # unreadable: streaming it says why
        return False


def run_demo(settings: Settings, path: Path, speed: float = 1.0, port: int = 0) -> int:
    _demo_tokens(settings)
    if _is_stereo(path):  # one stereo call: the mono-call diarizer would load for nothing
        settings.diarization.preload = False
    if settings.server.store == data_dir() / "calls.sqlite":
        # keep demo results out of the user's store
        settings.server.store = Path(tempfile.gettempdir()) / "callsense-demo" / "calls.sqlite"
    return asyncio.run(_demo(settings, path, speed, port))


async def _cluster_calls(
    urls: list[str], token: str, files: list[Path], speed: float, cluster: LocalCluster, console: Console
) -> list[dict[str, Any]]:
    """Streams the files as concurrent calls through the gateway; prints each final with its worker."""
    import websockets

    from callsense.service.client import stream_file

    ids = [f"demo-{i + 1}-{f.stem}" for i, f in enumerate(files)]
    remaining = set(ids)

    async def watch() -> None:
        async with websockets.connect(f"{urls[0]}/console?token={token}", max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "resume", "after": {}}))
            async for raw in ws:
                ev = json.loads(raw)
                if ev.get("call_id") not in remaining:
                    continue
                if ev["type"] == "transcript_final":
                    worker = await asyncio.to_thread(cluster.worker_of, ev["call_id"])
                    console.print(f"[dim]{ev['call_id']} on {worker}[/dim]  {ev['role']}: {ev['text']}")
                elif ev["type"] == "call_ended":
                    remaining.discard(ev["call_id"])
                    if not remaining:
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    results = await asyncio.gather(
        *(stream_file(f, urls[0], token, speed=speed, call_id=i) for f, i in zip(files, ids, strict=True))
    )
    await asyncio.wait_for(watcher, 60)
    return list(results)


def run_cluster_demo(settings: Settings, files: list[Path], speed: float, workdir: Path) -> int:
    """`make cluster-demo`: Redis, one gateway and two workers on this machine; two calls at once."""
    from callsense.service.broker import safe_url
    from callsense.service.cluster import LocalCluster, RedisMissing

    console = Console()
    config = settings.model_dump(mode="json", exclude={"server": {"store"}, "cluster": {"broker"}})
    token = next((t for t, g in settings.server.tokens.items() if g.role == "supervisor"), "dev-supervisor")
    cluster = LocalCluster(workdir, config, gateways=1, workers=2)
    try:
        with console.status("starting redis-server, a gateway and two workers (each loads the models)\u2026"):
            cluster.start()
    except RedisMissing as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    try:
        console.print(
            f"broker {safe_url(cluster.redis.url)}  \u2022  gateway {cluster.urls[0]}  \u2022  dashboard: "
            f"{cluster.urls[0].replace('ws://', 'http://')}/?token={token}  \u2022  logs in {workdir}"
        )
        results = asyncio.run(_cluster_calls(cluster.urls, token, files, speed, cluster, console))
    finally:
        cluster.stop()
    for r in results:
        state = "saved" if r["clean"] else "NOT confirmed saved"
        console.print(f"call {r['call_id']}: {state}" + "".join(f"\n  [yellow]{e}[/yellow]" for e in r["errors"]))
    console.print(f"reports are in each worker's store under {workdir}/worker*/")
    return 0 if all(r["clean"] for r in results) else 1
