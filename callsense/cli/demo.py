"""`callsense demo` (`make demo`): a sample call streamed in real time through the whole live path.

It starts the server on loopback, streams the sample over the plain ingest protocol exactly as
`callsense stream` would, and shows the operator console - all three over real websockets.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.live import Live

from callsense.config import Settings
from callsense.events import parse_event
from callsense.reports.store import Store
from callsense.service.console import ConsoleView


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
    console.print(f"server on {url}  \u2022  web dashboard: http://127.0.0.1:{port}/?token={token}  \u2022  "
                  f"streaming {path.name} (a constructed call, see samples/README.md) at {speed:g}x")
    from callsense.service.client import stream_file

    # the console is the call's own operator's (the raw view); the dashboard address is a supervisor's
    operator = next(((t, g.operator_id) for t, g in settings.server.tokens.items()
                     if g.role == "operator" and g.operator_id), (token, "op-001"))
    view = ConsoleView()
    streamer = asyncio.create_task(stream_file(path, url, token, speed=speed, operator_id=operator[1]))
    async with websockets.connect(f"{url}/console?token={operator[0]}") as ws:
        await ws.send(json.dumps({"type": "resume", "after": {}}))
        with Live(view.render(min(console.size.height, 30)), console=console, refresh_per_second=8) as live:
            async for message in ws:
                data = json.loads(message)
                if data.get("type") == "notice":
                    continue
                view.apply(parse_event(data))
                live.update(view.render(min(console.size.height, 30)))
                if view.ended:
                    break
    result = await streamer
    await server.shutdown()
    report = Store(settings.server.store).call_dir("reports", result["call_id"]) / "report.html"
    console.print(f"call ended. Quality report: [bold]{report}[/bold]")
    for err in result["errors"]:
        console.print(f"[yellow]warning:[/yellow] {err}")
    return 0


def run_demo(settings: Settings, path: Path, speed: float = 1.0, port: int = 0) -> int:
    if str(settings.server.store).startswith("callsense-data"):
        # keep demo results out of the user's store
        settings.server.store = Path(tempfile.gettempdir()) / "callsense-demo" / "calls.sqlite"
    return asyncio.run(_demo(settings, path, speed, port))
