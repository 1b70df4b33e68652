"""`callsense audit DIR --out DIR`: every recording in a folder through the same pipeline, in parallel
worker processes, resumable. Results go to SQLite as each call finishes, so Ctrl-C or a crash loses
nothing and a rerun skips what is done; a corrupt file is recorded as failed and the audit goes on.

Engines: `local` (a process pool from the standard library) or `dask` (a local Dask cluster by
default, or any scheduler address) for audits larger than one machine.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
from collections import defaultdict
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from callsense.config import Settings
from callsense.reports.store import Store

AUDIO = {".wav", ".flac", ".mp3", ".ogg"}
CHATS = {".json"}  # chat and ticket transcripts (docs/protocol.md)
_MODELS: Any = None  # one copy of the models per worker process
MATH_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def find_calls(folder: Path, chats: bool = False) -> list[dict[str, Any]]:
    """Recordings under `folder` (and chat transcripts when `chats`: a .json beside recordings is often
    a reference transcript, not a call), with metadata.csv when present: one row per file, columns
    `file` (relative path), `operator_id`, `team`, `date`, `channels` (e.g. operator,customer)."""
    meta: dict[str, dict[str, str]] = {}
    meta_file = folder / "metadata.csv"
    if meta_file.exists():
        with meta_file.open(encoding="utf-8") as fh:
            meta = {row["file"]: row for row in csv.DictReader(fh) if row.get("file")}
    kinds = AUDIO | CHATS if chats else AUDIO
    calls = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in kinds):
        rel = str(path.relative_to(folder))
        row = meta.get(rel, {})
        calls.append(
            {
                "path": str(path),
                "source": rel,
                "operator_id": row.get("operator_id") or None,
                "team": row.get("team") or None,
                "date": row.get("date"),
                "channels": row.get("channels") or None,
            }
        )
    return calls


def _named(calls: list[dict[str, Any]], settings: Settings, out: Path) -> list[dict[str, Any]]:
    """With redaction on, a recording is known to the store and the exports by its path redacted
    ("call_[PHONE]_[NAME].json") and a keyed digest of the real one (two calls that redact alike
    stay apart, and a rerun still finds what is done); the key stays beside the audit (mode 0600)."""
    if not settings.report.redact_pii:
        return calls
    from callsense.reports.privacy import redact_path

    key_file = out / ".source-key"
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_bytes(secrets.token_bytes(16))
    key = key_file.read_bytes()
    for call in calls:
        digest = hashlib.blake2b(call["source"].encode(), key=key, digest_size=4).hexdigest()
        call["raw_source"], call["source"] = call["source"], f"{redact_path(call['source'])} #{digest}"
    return calls


def _error_text(res: dict[str, Any], settings: Settings) -> str:
    """A failure as the store and the exports keep it: the file's name as exported, personal data redacted."""
    error = str(res["error"])
    if not settings.report.redact_pii:
        return error
    from callsense.reports.privacy import redact

    for raw in (res["path"], res.get("raw_source", "")):
        if raw:
            error = error.replace(raw, res["source"])
    return redact(error)


def _done(call: dict[str, Any], events: list[Any], settings: Any) -> dict[str, Any]:
    """A finished call's result; its events are redacted here, before anything is stored."""
    from callsense.reports.privacy import redact_events
    from callsense.reports.report import build_report

    report = build_report(events, settings, call["source"])
    kept = [e for e in events if e.type != "transcript_partial"]
    if settings.report.redact_pii:
        kept = redact_events(kept, report["language"])
    return {
        **call,
        "status": "done",
        "call_id": events[0].call_id,
        "report": report,
        "events": [e.model_dump_json() for e in kept],
    }


def process_call(call: dict[str, Any], settings_json: str) -> dict[str, Any]:
    """Runs in a worker: one recording through the pipeline; never raises for a bad file."""
    global _MODELS
    from callsense.audio.codecs import AudioError
    from callsense.audio.files import FileSource
    from callsense.config import Settings
    from callsense.pipeline import CallPipeline, roles_for
    from callsense.registry import Models

    settings = Settings.model_validate_json(settings_json)
    if call.get("channels"):
        settings.channels = call["channels"].split(",")
    if _MODELS is None:
        _MODELS = Models(settings)
    try:
        if call["path"].endswith(".json"):  # a chat or ticket transcript: the same stages minus the voice
            from callsense.reports.report import analyze_dialogue

            return _done(call, analyze_dialogue(Path(call["path"]), settings), settings)
        source = FileSource(call["path"], chunk_ms=500)
        roles = roles_for(source.channels, settings)
        pipe = CallPipeline(
            settings, _MODELS, roles, operator_id=call.get("operator_id"), source=call["source"], profile="recording"
        )
        events = pipe.run(source)
        if source.error:
            return {**call, "status": "failed", "error": source.error}
        return _done(call, events, settings)
    except AudioError as exc:
        return {**call, "status": "failed", "error": str(exc)}
    except Exception as exc:  # one broken call must not stop an audit of thousands
        return {**call, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def start_worker() -> None:
    """A local worker's first step, while it has one thread: spaCy's name finder is imported without
    thinc's optional torch bridge, which it does not use. Torch takes 1-2 s of a worker's start and a
    stereo call never needs it (a mono call's diarization imports it when it comes)."""
    import signal
    import sys

    # Ctrl-C reaches the whole process group: the parent decides (it stops the audit); a worker that took
    # it would only fail its current call and go on to the next one, minutes more
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        import spacy  # noqa: F401
    except ImportError:
        pass  # no spaCy: redaction says so when it needs it
    finally:
        del sys.modules["torch"]


def _longest_first(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Largest files (longest recordings) first, so the last calls to finish are short and no worker
    idles at the end while another still has a long call. Sized by the file system, not by reading
    the audio: the parent never parses a file; a broken or hostile one fails in a worker."""

    def size(call: dict[str, Any]) -> int:
        try:
            return Path(call["path"]).stat().st_size
        except OSError:
            return 0

    return sorted(calls, key=size, reverse=True)


def _local(calls: list[dict[str, Any]], settings_json: str, workers: int) -> Generator[dict[str, Any], None, None]:
    import multiprocessing

    # spawn, not fork: the parent may hold model runtimes (OpenMP, ONNX) that do not survive a fork
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker
    )
    try:
        futures: list[Future] = [pool.submit(process_call, c, settings_json) for c in calls]
        for fut in as_completed(futures):
            yield fut.result()
    except BaseException:
        # Ctrl-C, or the caller stopped: what was saved stays (the next run resumes after it); the calls in
        # progress are stopped, not awaited - shutting the pool down normally would run every queued call
        _stop_now(pool)
        raise
    pool.shutdown()


def _stop_now(pool: ProcessPoolExecutor) -> None:
    workers = list((getattr(pool, "_processes", None) or {}).values())  # no public way before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        proc.terminate()


def _dask(
    calls: list[dict[str, Any]], settings_json: str, workers: int, address: str | None
) -> Generator[dict[str, Any], None, None]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError as exc:
        raise SystemExit("the dask engine needs: pip install 'dask[distributed]'") from exc
    cluster = None if address else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    client = Client(address or cluster)
    try:
        futures = [client.submit(process_call, c, settings_json, pure=False) for c in calls]
        for fut in dask_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster:
            cluster.close()


@contextmanager
def _worker_threads(n: int) -> Iterator[None]:
    """Worker processes started meanwhile inherit math libraries limited to `n` threads, their share
    of the cores (as loky does for its workers): otherwise each library's own pool (OpenBLAS spins
    after every call) competes with the other workers. Bench's 8 calls on 2 cores, 2 workers: about
    45 s instead of 47-55 s (docs/benchmarks.md)."""
    saved = {k: os.environ.get(k) for k in MATH_THREADS}
    os.environ.update(dict.fromkeys(MATH_THREADS, str(n)))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_audit(
    folder: Path,
    out: Path,
    settings: Settings,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
    chats: bool = False,
) -> dict[str, Any]:
    from callsense.events import parse_event
    from callsense.reports.report import save_report

    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "audit.sqlite")
    calls = _named(find_calls(folder, chats), settings, out)
    teams = {c["source"]: c["team"] for c in calls if c.get("team")}  # as the store knows them (redacted names)
    todo = _longest_first([c for c in calls if store.status(c["source"]) != "done"])
    # split the machine's cores between workers so they do not fight over them
    settings = settings.model_copy(deep=True)
    settings.models.whisper_threads = max(1, (os.cpu_count() or 2) // max(workers, 1))
    settings_json = settings.model_dump_json()
    results = _dask(todo, settings_json, workers, address) if engine == "dask" else _local(todo, settings_json, workers)
    with (
        _worker_threads(settings.models.whisper_threads),
        Progress(
            TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[last]}")
        ) as bar,
    ):
        task = bar.add_task("audit", total=len(calls), completed=len(calls) - len(todo), last="")
        try:
            for res in results:
                if res["status"] == "done":
                    events = [parse_event(e) for e in res["events"]]
                    store.save_call(
                        res["call_id"], events, res["report"], source=res["source"], operator_id=res.get("operator_id")
                    )
                    if res["report"] is not None:  # a report per call, beside the store (as a server keeps them)
                        save_report(res["report"], store.call_dir("reports", res["call_id"]))
                else:
                    store.record_failure(f"failed:{res['source']}", res["source"], _error_text(res, settings))
                bar.update(task, advance=1, last=f"{res['source']}: {res['status']}")
        finally:
            # Ctrl-C may land here, between two results: the workers stop now, not when the generator is
            # collected (the process would wait at exit for every queued call)
            results.close()
    return write_summary(store, out, skipped=len(calls) - len(todo), teams=teams)


def write_summary(store: Store, out: Path, skipped: int = 0, teams: dict[str, str] | None = None) -> dict[str, Any]:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    reports = store.reports()
    for r in reports:  # exporting a call's results is a read of its data
        store.log_access(f"audit:{os.environ.get('USER', 'unknown')}", r["call_id"], "export to calls.csv/summary")
    rows = []
    for r in reports:
        m = r["metrics"]
        rows.append(
            {
                "call_id": r["call_id"],
                "source": r["source"],
                "operator_id": r.get("operator_id") or "",
                "duration_s": m["duration_s"],
                "operator_conduct": (r["scores"]["operator_conduct"] or {}).get("score"),
                "customer_experience": (r["scores"]["customer_experience"] or {}).get("score"),
                "flags": ",".join(f["flag"] for f in r.get("flags", [])),
                "compliance_passed": sum(bool(c["passed"]) for c in r["compliance"]),
                "compliance_items": sum(c["passed"] is not None for c in r["compliance"]),
                "talk_listen_ratio": m["talk_listen_ratio"],
                "operator_interruptions": m["interruptions"].get("operator", 0),
                "silences_over_5s": len(m["silences"]),
                "escalations": len(m["escalations"]),
                "customer_valence_start": m["customer_valence_start"],
                "customer_valence_end": m["customer_valence_end"],
                "team": (teams or {}).get(r["source"], ""),
                "report": str(store.call_dir("reports", r["call_id"]) / "report.html"),
            }
        )
    if rows:
        with (out / "calls.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _parquet(rows, out / "calls.parquet")
    cards: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        cards[row["operator_id"] or "(unknown)"].append(row)
    # scorecards rest on operator conduct & compliance alone: no emotion reading (docs/models.md)
    scorecards = [
        {
            "operator_id": op,
            "calls": len(rs),
            "hours": round(sum(r["duration_s"] for r in rs) / 3600, 3),
            "mean_operator_conduct": _mean([r["operator_conduct"] for r in rs]),
            "interruptions": sum(r["operator_interruptions"] for r in rs),
        }
        for op, rs in sorted(cards.items())
    ]
    for card in scorecards:  # each operator's failure rate per checklist item (evidence, not emotion)
        card["checklist_failure_rate"] = _failure_rates(
            [r for r in reports if (r.get("operator_id") or "(unknown)") == card["operator_id"]]
        )
    by_row = {r["call_id"]: r for r in reports}
    # calls a quality analyst should listen to: the worst experiences first (about calls, not people)
    worth = sorted(rows, key=lambda r: (r["customer_experience"] is None, r["customer_experience"] or 0, -r["escalations"]))[
        :10
    ]
    failures = store.failures()
    summary = {
        "calls": len(rows),
        "failed": len(failures),
        "skipped_already_done": skipped,
        "audio_hours": round(sum(r["duration_s"] for r in rows) / 3600, 3),
        "checklist": _item_rates(reports),
        "scorecards": scorecards,
        "worth_listening": [{**r, **_why_listen(by_row[r["call_id"]])} for r in worth],
        "failures": [{"source": s, "error": e} for s, e in failures],
    }
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
    scores = [r["operator_conduct"] for r in rows if r["operator_conduct"] is not None]
    histogram = [sum(10 * i <= s < 10 * (i + 1) or (i == 9 and s == 100) for s in scores) for i in range(10)]
    (out / "summary.html").write_text(
        env.get_template("audit.html").render(s=summary, histogram=histogram), encoding="utf-8"
    )
    return summary


def _item_rates(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checklist item over the audit: calls where it was judged, failed, and the failure rate."""
    judged: dict[str, list[bool]] = defaultdict(list)
    titles: dict[str, str] = {}
    for r in reports:
        for c in r["compliance"]:
            titles[c["id"]] = c["title"]
            if c["passed"] is not None:
                judged[c["id"]].append(not c["passed"])
    return [
        {"id": i, "title": titles[i], "judged": len(v), "failed": sum(v), "failure_rate": round(sum(v) / len(v), 3)}
        for i, v in judged.items()
        if v
    ]


def _failure_rates(reports: list[dict[str, Any]]) -> dict[str, float]:
    return {i["id"]: i["failure_rate"] for i in _item_rates(reports)}


def _why_listen(report: dict[str, Any]) -> dict[str, Any]:
    """Why a call is worth listening to, and where: its escalations' times, its failed items' evidence."""
    m = report["metrics"]
    cx = (report["scores"]["customer_experience"] or {}).get("score")
    reasons = [f"customer experience {cx}"] if cx is not None else []
    reasons += [f"{e['severity']}: {e['title']}" for e in m["escalations"][:3]]
    failed = [c for c in report["compliance"] if c["passed"] is False]
    reasons += [f"missed: {c['title']}" for c in failed[:3]]
    times = sorted(
        {round(e["t"], 1) for e in m["escalations"]} | {round(c["evidence"]["t"], 1) for c in failed if c["evidence"]}
    )
    return {"why": "; ".join(reasons), "at_s": times[:8]}


def _mean(values: list[int | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(sum(kept) / len(kept), 1) if kept else None


def _parquet(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return  # CSV is always written; Parquet when pyarrow is installed
    pq.write_table(pa.Table.from_pylist(rows), path)
