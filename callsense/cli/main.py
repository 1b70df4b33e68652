"""`callsense` command line. Every sub-command runs the same streaming pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from callsense import __version__
from callsense.cli import live
from callsense.cli.common import COMMANDS, command, settings_from
from callsense.config import SAMPLES_DIR

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
warnings.filterwarnings("ignore", message=r"\s*torchcodec")
warnings.filterwarnings("ignore", category=UserWarning, module=r"pyannote\..*")

SAMPLES = SAMPLES_DIR
# constructed with synthetic voices to show every kind of hint (scripts/make_escalation_call.py)
DEMO_CALL = SAMPLES / "en_escalation_call.flac"


# --- models, schema -----------------------------------------------------------------------------


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from callsense import registry

    settings = settings_from(args)
    console = Console()
    if args.action == "check":
        results = registry.check(settings.models)
        for name, ok, msg in results:
            console.print(f"{'[green]ok[/green]  ' if ok else '[red]FAIL[/red]'} {name:<15} {msg}")
        bad = [r for r in results if not r[1]]
        console.print(
            f"{len(results) - len(bad)} of {len(results)} models load"
            + ("" if not bad else " - install what is named above, then run `callsense models check`")
        )
        return 1 if bad else 0
    table = Table(title="models the pipeline uses")
    for col in ("name", "purpose", "source", "path", "size", "sha256"):
        table.add_column(col, overflow="fold")
    for row in registry.describe(settings.models):
        if row["ok"]:
            table.add_row(
                row["name"], row["purpose"], row["source"], row["path"], f"{row['size_bytes'] / 1e6:.1f} MB", row["sha256"]
            )
        else:
            table.add_row(row["name"], row["purpose"], "[red]missing[/red]", row["error"], "", "")
    console.print(table)
    return 0


@command("schema")
def cmd_schema(args: argparse.Namespace) -> int:
    from callsense.events import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


# --- transcribe, diarize --------------------------------------------------------------------------


def run_file(path: Path, settings: Any, *, mono: bool = False, progress: bool = True) -> Any:
    """A file through the streaming pipeline, as a recording (`profiles.recording`)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from callsense.audio.codecs import AudioChunk
    from callsense.audio.files import FileSource
    from callsense.pipeline import CallPipeline, roles_for
    from callsense.registry import Models

    source = FileSource(path, chunk_ms=500)
    roles = roles_for(1 if mono else source.channels, settings)
    pipe = CallPipeline(settings, Models(settings), roles, source="file", profile="recording")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        transient=True,
        disable=not progress or not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(path.name, total=source.info.duration)

        def chunks() -> Any:
            for chunk in source:
                bar.update(task, completed=chunk.end)
                # --mono: a stereo file mixed down and diarized like a one-channel recording
                yield AudioChunk(chunk.audio.mean(axis=0, keepdims=True), chunk.start) if len(roles) == 1 else chunk

        pipe.run(chunks())
    if source.error:
        from callsense.events import Error

        pipe.events.append(pipe.seq.stamp(Error(code="truncated", message=source.error)))
    return pipe


@command("transcribe")
def cmd_transcribe(args: argparse.Namespace) -> int:
    from callsense.reports.report import transcript_json, transcript_srt, transcript_text

    settings = settings_from(args)
    pipe = run_file(Path(args.file), settings)
    fmt = {"json": transcript_json, "text": transcript_text, "srt": transcript_srt}[args.format]
    out = fmt(pipe.events)
    print(json.dumps(out, ensure_ascii=False, indent=1) if isinstance(out, dict) else out)
    _report_errors(pipe.events)
    return 0


@command("diarize")
def cmd_diarize(args: argparse.Namespace) -> int:
    from callsense.audio.files import read_audio
    from callsense.stages.diarization import OfflineDiarizer, StreamingDiarizer

    settings = settings_from(args)
    audio = read_audio(args.file).mean(axis=0)
    if args.streaming:
        d = StreamingDiarizer(settings.models, settings.diarization)
        for i in range(0, audio.size, 1600):
            d.push(audio[i : i + 1600])
        d.flush()
        ann = d.annotation.support()
    else:
        ann = OfflineDiarizer(settings.models, settings.diarization)(audio, args.num_speakers)
    ann.uri = Path(args.file).stem
    if args.format == "rttm":
        ann.write_rttm(sys.stdout)
    else:
        turns = [
            {"start": round(s.start, 3), "end": round(s.end, 3), "speaker": lbl}
            for s, _, lbl in ann.itertracks(yield_label=True)
        ]
        print(json.dumps({"file": args.file, "speakers": sorted(ann.labels()), "turns": turns}, indent=1))
    return 0


# --- analyze, demo ----------------------------------------------------------------------------------


@command("analyze")
def cmd_analyze(args: argparse.Namespace) -> int:
    from rich.console import Console

    from callsense.reports.report import analyze_dialogue, write_report

    settings = settings_from(args)
    path = Path(args.file)
    if path.suffix.lower() == ".json":
        events = analyze_dialogue(path, settings)
    else:
        events = run_file(path, settings, mono=args.mono).events
    out = write_report(events, Path(args.out), settings, source=path.name)
    Console().print(f"report: [bold]{out / 'report.html'}[/bold] and {out / 'report.json'}")
    _report_errors(events)
    return 0


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    """A stored call's report: where it is, what it says in brief; `--open` shows it in the browser.
    Reading it is a view of the call's data: it goes into the access log."""
    import getpass
    import webbrowser

    from rich.console import Console

    from callsense.reports.store import Store

    settings = settings_from(args)
    store_path = Path(args.store) if args.store else settings.server.store
    console = Console()
    if not store_path.exists():
        console.print(f"[red]no call store at {store_path}[/red]: pass --store (a server's or worker's calls.sqlite)")
        return 2
    store = Store(store_path)
    row = store.db.execute("SELECT status, report FROM calls WHERE call_id = ?", (args.call_id,)).fetchone()
    page = store.call_dir("reports", args.call_id) / "report.html"
    if row is None or not page.exists():
        console.print(
            f"[red]no report for call {args.call_id[:64]!r} in {store_path}[/red]: a report is written when the call "
            "ends; in a cluster it is on the worker that ran the call (pass that worker's --store)."
        )
        return 2
    store.log_access(f"cli:{getpass.getuser()}", args.call_id, "report view")
    status, body = row
    brief = json.loads(body) if body else {}
    scores = brief.get("scores", {})
    cx, conduct = scores.get("customer_experience") or {}, scores.get("operator_conduct") or {}
    console.print(f"call [bold]{args.call_id}[/bold]: {status}")
    console.print(f"customer experience {cx.get('score', '-')}, operator conduct {conduct.get('score', '-')}")
    console.print(f"report: [bold]{page}[/bold]")
    for d in store.disputes(call_id=args.call_id):  # the operator's answers to the scorecard, and the outcome
        decided = f" by {d['decided_by']}" + (f": {d['decision']}" if d["decision"] else "") if d["decided_by"] else ""
        console.print(f"dispute of {d['item']} by {d['by']}: {d['comment']!r} - {d['outcome']}{decided}", markup=False)
    if args.summary:  # plain text, to paste into the ticket
        full = json.loads((page.parent / "report.json").read_text(encoding="utf-8"))
        print((full.get("summary") or {}).get("text") or "this report has no summary (written before callsense 0.18)")
    if args.open:
        webbrowser.open(page.as_uri())
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from callsense.cli.demo import run_demo

    return run_demo(settings_from(args), Path(args.file), speed=args.speed, port=args.port)


@command("cluster-demo")
def cmd_cluster_demo(args: argparse.Namespace) -> int:
    from callsense.cli.demo import run_cluster_demo

    return run_cluster_demo(settings_from(args), [Path(f) for f in args.files], args.speed, args.workdir.resolve())


def _report_errors(events: list[Any]) -> None:
    for ev in events:
        if ev.type == "error":
            print(f"warning: {ev.message}", file=sys.stderr)


# --- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callsense",
        description="Live call analytics on a CPU: who speaks, what they say, how they feel, and hints "
        "for the operator. Start with `callsense demo`.",
    )
    p.add_argument("--version", action="version", version=f"callsense {__version__}")
    p.add_argument("--config", type=Path, help="settings YAML (default: the configs/default.yaml shipped in the package)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser("models", help="list the models in use; `models check` loads each one")
    m.add_argument("action", nargs="?", choices=["list", "check"], default="list", help="check: load each model once")
    sub.add_parser("schema", help="print the JSON schema of the events")

    t = sub.add_parser("transcribe", help="transcribe a recording through the streaming pipeline")
    t.add_argument("file", help="a recording (wav, flac, ogg, mp3)")
    t.add_argument("--language", choices=["ru", "en", "da", "auto"], default="auto", help="auto: detected per speaker")
    t.add_argument("--channels", help="roles of a stereo file's channels, e.g. operator,customer")
    t.add_argument("--format", choices=["json", "text", "srt"], default="json", help="output format (on stdout)")

    d = sub.add_parser("diarize", help="who spoke when (pyannote.audio), as RTTM or JSON")
    d.add_argument("file", help="a recording")
    d.add_argument("--num-speakers", type=int, help="when known (default: found, at most diarization.max_speakers)")
    d.add_argument("--format", choices=["rttm", "json"], default="rttm", help="output format (on stdout)")
    d.add_argument("--streaming", action="store_true", help="use the live (rolling-window) diarizer")

    a = sub.add_parser("analyze", help="post-call report for a recording or a chat transcript (.json)")
    a.add_argument("file", help="a recording, or a chat transcript (.json, docs/protocol.md)")
    a.add_argument("--out", default="out/report", help="folder for report.html and report.json")
    a.add_argument("--language", choices=["ru", "en", "da", "auto"], default="auto", help="auto: detected per speaker")
    a.add_argument("--channels", help="roles of a stereo file's channels, e.g. customer,operator")
    a.add_argument("--mono", action="store_true", help="treat a stereo file as one mixed channel")

    r = sub.add_parser("report", help="a stored call's report: its path and scores (--open: in the browser)")
    r.add_argument("call_id", help="the call's id (as the dashboard and the stream command show it)")
    r.add_argument("--store", help="the calls.sqlite to look in (default: server.store in the config)")
    r.add_argument("--open", action="store_true", help="open report.html in the browser")
    r.add_argument(
        "--summary", action="store_true", help="print the call's summary for the ticket (reason, done, promised, open)"
    )

    demo = sub.add_parser("demo", help="stream a sample call live through the pipeline to the console")
    demo.add_argument("--file", default=str(DEMO_CALL), help="the call to stream (default: the escalation sample)")
    demo.add_argument("--speed", type=float, default=1.0, help="1.0 = real time")
    demo.add_argument("--port", type=int, default=0, help="server port (0 = any free port)")
    cdemo = sub.add_parser("cluster-demo", help="Redis, one gateway and two workers on this machine; two calls at once")
    cdemo.add_argument(
        "--files",
        nargs="+",
        default=[str(DEMO_CALL), str(DEMO_CALL.parent / "ru_call_stereo.flac")],
        help="calls streamed at once (default: two samples)",
    )
    cdemo.add_argument("--speed", type=float, default=1.0, help="1.0 = real time")
    cdemo.add_argument("--workdir", type=Path, default=Path("out/cluster-demo"), help="logs and the workers' stores")
    live.add_parsers(sub)
    for name, cmd in sub.choices.items():  # every command's options with their defaults, and examples
        cmd.formatter_class = HelpFormatter
        cmd.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.get(name, ()))
    return p


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help says it); the examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings
        return text if quiet else f"{text} (default: %(default)s)"


EXAMPLES: dict[str, tuple[str, ...]] = {
    "models": ("callsense models check",),
    "schema": ("callsense schema > events.schema.json",),
    "transcribe": ("callsense transcribe call.flac --channels operator,customer --format text",),
    "diarize": ("callsense diarize meeting.wav --num-speakers 2",),
    "analyze": ("callsense analyze call.flac --out out/report", "callsense analyze chat.json --language ru"),
    "report": ("callsense report en_escalation_call-1a2b3c --open", "callsense report en_escalation_call-1a2b3c --summary"),
    "demo": ("callsense demo", "callsense demo --file my_call.flac --speed 2"),
    "cluster-demo": ("callsense cluster-demo --speed 2",),
    "serve": (
        "callsense serve --port 8765",
        "callsense serve --host 0.0.0.0 --audiosocket-port 9092   # with your own tokens in the config",
        "callsense serve --role gateway --broker redis://redis:6379/0",
    ),
    "worker": ("callsense worker --broker redis://redis:6379/0 --name worker-1",),
    "stream": ("callsense stream call.flac --url ws://127.0.0.1:8765 --token dev-operator --speed 2",),
    "console": ("callsense console --token dev-supervisor", "callsense console --call CALL_ID"),
    "enroll": ("callsense enroll op-001 op-001-greeting.wav op-001-call.flac",),
    "audit": ("callsense audit /data/calls --out out/audit --workers 2",),
    "bench": ("callsense bench --quick", "callsense bench --only hints,privacy --data ../shared/data"),
}


def main(argv: list[str] | None = None) -> int:
    from callsense.audio.codecs import AudioError
    from callsense.config import ConfigError
    from callsense.models import ModelMissing

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (ModelMissing, AudioError, ConfigError, FileNotFoundError) as exc:
        print(f"callsense: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("callsense: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
