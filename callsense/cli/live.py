"""Sub-commands of the live service and the long jobs: serve, stream, console, enroll, audit, bench."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from callsense.cli.common import command, settings_from
from callsense.config import Settings


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the live service (ingest + consoles + web dashboard)")
    s.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="port for websockets, the dashboard and HTTP (default: server.port, 8765)")
    s.add_argument("--audiosocket-port", type=int, help="also accept Asterisk AudioSocket on this TCP port")
    s.add_argument(
        "--role",
        choices=["all", "gateway"],
        default="all",
        help="all: one process does everything (default); gateway: sources and consoles only, "
        "calls run on `callsense worker`s (needs --broker)",
    )
    s.add_argument("--broker", help="redis://HOST:PORT/DB joining gateways and workers (default: cluster.broker)")

    w = sub.add_parser("worker", help="process live calls that gateways put on the broker")
    w.add_argument("--broker", help="redis://HOST:PORT/DB (default: cluster.broker in the config)")
    w.add_argument("--name", help="this worker's name in the cluster (default: host-pid)")
    w.add_argument(
        "--health-port", type=int, help="serve /health and /metrics on this port (0: any free port; default: none)"
    )

    st = sub.add_parser("stream", help="feed a recording to a server as a live call, in real time")
    st.add_argument("file", help="a recording (wav, flac, ogg, mp3; stereo: one party per channel)")
    st.add_argument("--url", default="ws://127.0.0.1:8765", help="the server (ws:// or wss://)")
    st.add_argument(
        "--token",
        default="dev-operator",
        help="an operator's or ingest token of that server; for audiohook, API_KEY:CLIENT_SECRET (base64)",
    )
    st.add_argument(
        "--protocol",
        choices=["plain", "twilio", "audio_fork", "audiohook"],
        default="plain",
        help="which telephony protocol to speak (audiohook: as Genesys Cloud does, signed)",
    )
    st.add_argument("--channels", help="roles of the file's channels, e.g. operator,customer")
    st.add_argument("--speed", type=float, default=1.0, help="1.0 = real time, 0 = as fast as possible")
    st.add_argument("--call-id", help="the call's id (default: the file's name and a random suffix)")

    c = sub.add_parser("console", help="the operator's terminal console")
    c.add_argument("--url", default="ws://127.0.0.1:8765", help="the server (ws:// or wss://)")
    c.add_argument("--token", default="dev-operator", help="an operator's token (their calls) or a supervisor's (all)")
    c.add_argument("--call", help="follow one call only")

    e = sub.add_parser("enroll", help="store an operator's voiceprint from recordings of them")
    e.add_argument("operator_id", help="the id their calls carry (token grants' operator_id)")
    e.add_argument("files", nargs="+", help="recordings of the operator alone (10 s or more in all)")

    au = sub.add_parser("audit", help="audit every recording in a folder (resumable, parallel)")
    au.add_argument("folder", help="recordings (and with --chats, chat transcripts), sub-folders included")
    au.add_argument("--out", default="out/audit", help="where the store, reports and exports go (rerun: resumes)")
    au.add_argument("--workers", type=int, default=1, help="calls processed at once (one core each)")
    au.add_argument("--engine", choices=["local", "dask"], default="local", help="local processes, or a dask cluster")
    au.add_argument("--address", help="dask scheduler address (default: a local cluster)")
    au.add_argument("--chats", action="store_true", help="also audit chat transcripts (.json); default: recordings only")

    b = sub.add_parser("bench", help="measure speed, latency, load and accuracy on this machine")
    b.add_argument("--quick", action="store_true", help="a few minutes instead of the full run")
    b.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    b.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[3] / "shared" / "data",
        help="labelled data in the layout of ../shared/data",
    )
    b.add_argument(
        "--only",
        help="comma-separated: asr,live,diarization,text_emotion,speech_emotion,load,audit,"
        "privacy,hints,soak,wholecall,cluster",
    )


def _with_broker(args: argparse.Namespace) -> Settings:
    settings = settings_from(args)
    if args.broker:
        settings.cluster.broker = args.broker
    return settings


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@command("serve")
def cmd_serve(args: argparse.Namespace) -> int:
    from callsense.service.server import CallServer

    settings = _with_broker(args)
    _logging(settings)
    if args.role == "gateway" and not settings.cluster.broker:
        print("--role gateway needs a broker: --broker redis://HOST:PORT/DB", file=sys.stderr)
        return 2

    async def main() -> int:
        if args.role == "gateway":
            from callsense.service.gateway import Gateway

            server: CallServer = Gateway(settings, name=f"gateway-{os.getpid()}")
        else:
            server = CallServer(settings)
        port = await server.start(args.host, args.port, args.audiosocket_port)
        print(
            f"callsense {'gateway ' if args.role == 'gateway' else ''}serving on "
            f"{'wss' if settings.server.certfile else 'ws'}://{args.host or settings.server.host}:"
            f"{port} (dashboard at /, health at /health)"
            + (f"; AudioSocket on tcp port {server.audiosocket_port}" if args.audiosocket_port is not None else ""),
            flush=True,
        )
        stop = _stop_on_signals()
        await stop.wait()
        print(f"shutting down: finishing calls in flight (at most {settings.server.shutdown_timeout_s:.0f} s)\u2026")
        return await server.shutdown()

    interrupted = asyncio.run(main())
    if interrupted:
        print(f"{interrupted} call(s) were still running; they were saved as interrupted", file=sys.stderr)
        # a stage stuck in native code cannot be interrupted; its thread must not keep the process alive
        os._exit(0)
    return 0


@command("worker")
def cmd_worker(args: argparse.Namespace) -> int:
    from callsense.service.broker import safe_url
    from callsense.service.worker import Worker

    settings = _with_broker(args)
    if args.health_port is not None:
        settings.cluster.health_port = args.health_port
    _logging(settings)
    if not settings.cluster.broker:
        print("a worker needs a broker: --broker redis://HOST:PORT/DB", file=sys.stderr)
        return 2

    async def main() -> None:
        worker = Worker(settings, name=args.name)
        stop = _stop_on_signals()
        print(f"callsense worker {worker.name}: loading models\u2026", flush=True)
        where = safe_url(settings.cluster.broker)
        await worker.run(stop, lambda: print(f"callsense worker {worker.name}: taking calls from {where}", flush=True))

    asyncio.run(main())
    return 0


def _logging(settings: Settings) -> None:
    import logging

    from callsense.service.logs import setup_logging

    setup_logging(settings.server.log_format, settings.server.log_level)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection is the access log's job


def _server_url(url: str) -> str | None:
    """What is wrong with a server address, in a line (None: nothing)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return f"{url} is a web address: use {'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return f"{url} is not a server address: use ws://HOST:PORT (wss:// when the server has TLS)"
    return None


def _reach(url: str, job: Any) -> Any:
    """Run a client coroutine against a server; a server that is not there, or refuses, is one line."""
    import websockets.exceptions

    try:
        return asyncio.run(job)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # the file, not the server: main says so
    except websockets.exceptions.InvalidStatus as exc:
        print(f"callsense: {url} refused the connection: HTTP {exc.response.status_code}", file=sys.stderr)
    except (OSError, websockets.exceptions.InvalidHandshake) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        print(f"callsense: no callsense server answers at {url} ({why}): is `callsense serve` running?", file=sys.stderr)
    raise SystemExit(2)


@command("stream")
def cmd_stream(args: argparse.Namespace) -> int:
    from callsense.service.client import stream_file

    if problem := _server_url(args.url):
        print(f"callsense: {problem}", file=sys.stderr)
        return 2
    roles = args.channels.split(",") if args.channels else None
    job = stream_file(args.file, args.url, args.token, args.protocol, roles=roles, call_id=args.call_id, speed=args.speed)
    result = _reach(args.url, job)
    for err in result["errors"]:
        print(f"server reported: {err}", file=sys.stderr)
    if not result["clean"]:
        print(
            f"call {result['call_id']} did not end cleanly: the server did not confirm that all of it was "
            "processed and saved",
            file=sys.stderr,
        )
        return 1
    print(f"call {result['call_id']} ended and was saved" + (" (with warnings above)" if result["errors"] else ""))
    return 1 if result["errors"] else 0


@command("console")
def cmd_console(args: argparse.Namespace) -> int:
    from callsense.service.console import run_console

    if problem := _server_url(args.url):
        print(f"callsense: {problem}", file=sys.stderr)
        return 2
    return int(asyncio.run(run_console(args.url, args.token, args.call)))


@command("enroll")
def cmd_enroll(args: argparse.Namespace) -> int:
    from callsense.audio.files import read_audio
    from callsense.stages.diarization import enroll

    clips = [read_audio(Path(f)).mean(axis=0) for f in args.files]
    path = enroll(args.operator_id, clips)
    print(f"voiceprint for {args.operator_id} stored in {path}")
    return 0


@command("audit")
def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 when every recording was audited (now or by an earlier run), 1 when one failed or none was
    found, 2 when the folder is not there: a scheduled audit's failure shows in its exit status."""
    from callsense.reports.audit import AUDIO, CHATS, run_audit

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"callsense: no folder {folder}: pass the folder that holds the recordings", file=sys.stderr)
        return 2
    summary = run_audit(
        folder, Path(args.out), settings_from(args), args.workers, args.engine, args.address, chats=args.chats
    )
    print(
        f"audited {summary['calls']} calls ({summary['audio_hours']} h), {summary['failed']} failed; "
        f"summary: {Path(args.out) / 'summary.html'}"
    )
    if not summary["calls"] and not summary["failed"] and not summary.get("skipped_already_done"):
        kinds = " ".join(sorted(AUDIO | CHATS if args.chats else AUDIO))
        print(f"callsense: no recordings found in {folder} (looked for {kinds}, in sub-folders too)", file=sys.stderr)
        return 1
    if summary["failed"]:
        print(f"callsense: {summary['failed']} recording(s) failed: the summary lists why", file=sys.stderr)
        return 1
    return 0


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    from callsense.bench.runner import main_bench

    only = args.only.split(",") if args.only else None
    return main_bench(settings_from(args), args.data, args.quick, args.json, only)
